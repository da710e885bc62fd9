"""Absorbed-MLA decoding over the compressed cache gives the naive full forward's logits,
token by token, and the cache holds kv_lora_rank + qk_rope_head_dim values per token."""

import keras
import numpy as np
import pytest
from keras import ops

from model.config import yarn_scaling
from model.transformer import DeepSeekV3CausalLM
from tests.model.helpers import random_tokens, small_config


def decode_token_by_token(model, tokens):
    batch, length = tokens.shape
    cache = model.init_cache(batch, length)
    valid = np.ones((batch, length), bool)
    steps = []
    for t in range(length):
        positions = np.full((batch, 1), t)
        logits, cache = model.decode(tokens[:, t:t + 1], positions, cache, t, valid)
        steps.append(ops.convert_to_numpy(logits)[:, 0])
    return np.stack(steps, axis=1), cache


@pytest.mark.parametrize("changes", [
    {},
    {"q_lora_rank": None},
    {"rope_scaling": yarn_scaling(4.0, 64), "first_k_dense_replace": 0},
])
def test_absorbed_decoding_matches_naive_forward(changes):
    keras.utils.set_random_seed(1)
    cfg = small_config(**changes)
    model = DeepSeekV3CausalLM(cfg)
    tokens = random_tokens((2, 12), cfg.vocab_size, seed=1)
    naive = ops.convert_to_numpy(model(tokens))
    absorbed, _ = decode_token_by_token(model, tokens)
    np.testing.assert_allclose(absorbed, naive, atol=2e-5, rtol=1e-4)


def test_prefill_then_decode_matches_naive(tiny_model):
    tokens = random_tokens((3, 10), tiny_model.cfg.vocab_size, seed=2)
    naive = ops.convert_to_numpy(tiny_model(tokens))
    cache = tiny_model.init_cache(3, 10)
    valid = np.ones((3, 10), bool)
    prefill, cache = tiny_model.decode(tokens[:, :6], np.tile(np.arange(6), (3, 1)), cache, 0, valid)
    np.testing.assert_allclose(ops.convert_to_numpy(prefill), naive[:, :6], atol=2e-5, rtol=1e-4)
    for t in range(6, 10):
        step, cache = tiny_model.decode(tokens[:, t:t + 1], np.full((3, 1), t), cache, t, valid)
        np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], naive[:, t], atol=2e-5, rtol=1e-4)


def test_cache_holds_latent_and_rope_key_only(tiny_model):
    cfg = tiny_model.cfg
    tokens = random_tokens((2, 7), cfg.vocab_size)
    _, cache = decode_token_by_token(tiny_model, tokens)
    assert len(cache) == cfg.num_hidden_layers
    values_per_token = sum(int(np.prod(part.shape[2:])) for part in cache[0])
    assert values_per_token == cfg.kv_lora_rank + cfg.qk_rope_head_dim == 80
    full_mha = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    print(f"tiny: {values_per_token} cached values per token per layer vs {full_mha} for multi-head K/V "
          f"({1 - values_per_token / full_mha:.1%} smaller)")
    # the cached latent is the RMS-normalised kv_a output and the key is roped: both nonzero
    assert all(np.abs(ops.convert_to_numpy(part)).min(axis=-1).max() > 0 for part in cache[0])
