"""AdamW and checkpoints, the same for every stage that updates weights."""

import keras
import tensorflow as tf

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


def model_variables(model) -> tf.Module:
    """Every model variable by its path inside the model, for tf.train.Checkpoint.

    Checkpointing the Keras model object itself would silently skip the layers held in
    Python lists (decoder_layers, mtp_layers): Keras tracks them, TensorFlow's object
    graph does not."""
    holder = tf.Module()
    holder.variables_by_path = {v.path.split("/", 1)[1]: v for v in model.variables}
    if len(holder.variables_by_path) != len(model.variables):
        raise ValueError("model variable paths are not unique")
    return holder


def load_weights(model, checkpoint_prefix: str) -> None:
    """The model's variables from a checkpoint written by a training stage."""
    tf.train.Checkpoint(model=model_variables(model)).read(checkpoint_prefix).expect_partial()


def resumable(model, optimizer, directory: str, keep: int, init_weights: str | None = None):
    """(checkpoint, manager) over model + optimizer in `directory`, restored from its newest
    checkpoint if there is one, else the model initialised from init_weights if given."""
    checkpoint = tf.train.Checkpoint(model=model_variables(model), optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        print(f"resumed from {manager.latest_checkpoint} at step {int(optimizer.iterations.numpy())}", flush=True)
    elif init_weights:
        load_weights(model, init_weights)
        print(f"initialised from {init_weights}", flush=True)
    return checkpoint, manager
