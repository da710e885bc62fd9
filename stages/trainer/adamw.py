"""The optimizer of every stage that updates weights: AdamW on the warmup -> constant ->
cosine schedule. Free of TensorFlow, so the JAX trainer (jax_trainer.py) shares it."""

import keras

from stages.trainer.config import OptimizerConfig
from stages.trainer.schedule import WarmupConstantCosine


def make_optimizer(cfg: OptimizerConfig, model) -> keras.optimizers.AdamW:
    """AdamW on the schedule of cfg, built for the model's trainable variables."""
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupConstantCosine.from_training_config(cfg), beta_1=cfg.adam_beta_1,
        beta_2=cfg.adam_beta_2, epsilon=cfg.adam_epsilon, weight_decay=cfg.weight_decay)
    # no decay on norm weights (1-D), as Megatron and most LLM trainers do
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) == 1])
    optimizer.build(model.trainable_variables)
    return optimizer
