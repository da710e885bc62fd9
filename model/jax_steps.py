"""Jit-compiled training and greedy-decoding steps for the JAX backend.

Keras layers run statelessly here: the step takes the variables' values as arguments and
returns new ones, so jax.jit can compile the whole step once and donate the old buffers.

    train_step, state = make_train_step(model, optimizer)
    state, losses = train_step(state, token_ids)               # forward + backward + AdamW

    decode = GreedyDecoder(model)
    tokens = decode(prompt_ids, max_new_tokens=64)              # [b, max_new_tokens] numpy

model/generate.py stays the reference (eager, numpy-driven, any backend, sampling); this
decoder keeps the whole step, argmax included, on the device.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np

from model.losses import causal_lm_loss


def make_train_step(model, optimizer, mtp_lambda: float = 0.3):
    """-> (jitted step(state, token_ids) -> (state, losses), initial state). The state is
    (trainable values, non-trainable values, optimizer variable values); the loss is
    model.losses.causal_lm_loss (next-token CE + lambda * MTP + alpha * balance)."""
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, token_ids):
        out, non_trainable = model.stateless_call(trainable, non_trainable, token_ids, return_aux=True)
        losses = causal_lm_loss(out, token_ids, mtp_lambda=mtp_lambda)
        return losses["loss"], (losses, non_trainable)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, token_ids):
        trainable, non_trainable, optimizer_values = state
        (_, (losses, non_trainable)), grads = grad_fn(trainable, non_trainable, token_ids)
        trainable, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, trainable)
        return (trainable, non_trainable, optimizer_values), losses

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    return jax.jit(step, donate_argnums=0), state


class GreedyDecoder:
    """Greedy generation over the absorbed-MLA cache with one jitted step (prefill and
    each new token are two compilations per batch shape); the cache buffers are donated
    so each step updates them in place."""

    def __init__(self, model, cache_dtype: str = "bfloat16"):
        self.model, self.cache_dtype = model, cache_dtype
        self.values = [v.value for v in model.variables]
        self._step = jax.jit(self._decode, donate_argnums=3)

    def _decode(self, values, token_ids, position_ids, cache, start, key_valid):
        with keras.StatelessScope(state_mapping=list(zip(self.model.variables, values))):
            logits, cache = self.model.decode(token_ids, position_ids, cache, start, key_valid)
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache

    def __call__(self, prompt_ids, max_new_tokens: int) -> np.ndarray:
        """prompt_ids [b, p] (same length, no padding) -> generated ids [b, max_new_tokens]."""
        prompt_ids = np.asarray(prompt_ids, np.int32)
        batch, prompt_len = prompt_ids.shape
        total = prompt_len + max_new_tokens
        cache = self.model.init_cache(batch, total, self.cache_dtype)
        key_valid = jnp.ones((batch, total), bool)
        positions = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32), (batch, prompt_len))
        token, cache = self._step(self.values, jnp.asarray(prompt_ids), positions, cache, jnp.int32(0), key_valid)
        generated = [token]
        for step in range(max_new_tokens - 1):
            position = jnp.full((batch, 1), prompt_len + step, jnp.int32)
            token, cache = self._step(self.values, token[:, None], position, cache,
                                      jnp.int32(prompt_len + step), key_valid)
            generated.append(token)
        return np.asarray(jnp.stack(generated, axis=1))


def cache_bytes_per_token(model, cache_dtype: str = "bfloat16") -> int:
    """Bytes the absorbed cache holds per token: layers x (kv_lora_rank + qk_rope_head_dim)."""
    cfg = model.cfg
    return cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * jnp.dtype(cache_dtype).itemsize
