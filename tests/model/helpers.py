"""Backend-neutral helpers for the model tests (the suite runs on TensorFlow and JAX)."""

import keras
import numpy as np

from model.config import ModelConfig


def value_and_grad(model, loss_fn):
    """((loss, aux), gradients aligned with model.trainable_variables) of loss_fn(), which
    calls the model and returns (loss, aux); on TensorFlow through a GradientTape, on JAX
    through jax.value_and_grad over the variables' values."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss, aux = loss_fn()
        return (loss, aux), tape.gradient(loss, model.trainable_variables)
    if keras.backend.backend() == "jax":
        import jax

        trainable, frozen = model.trainable_variables, model.non_trainable_variables

        def compute(values):
            mapping = list(zip(trainable, values)) + [(v, v.value) for v in frozen]
            with keras.StatelessScope(state_mapping=mapping):
                return loss_fn()

        return jax.value_and_grad(compute, has_aux=True)([v.value for v in trainable])
    raise NotImplementedError(keras.backend.backend())


def random_tokens(shape, vocab_size, seed=0):
    return np.random.default_rng(seed).integers(2, vocab_size, shape).astype("int32")


def small_config(**changes):
    """A fast variant of tiny for tests that build their own models."""
    fields = dict(vocab_size=512, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                  num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=32,
                  kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                  n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                  max_position_embeddings=512, num_nextn_predict_layers=1, initializer_range=0.02)
    fields.update(changes)
    return ModelConfig(**fields)
