"""The jitted JAX steps (model/jax_steps.py) against the eager reference paths: the
greedy decoder gives model.generate's tokens, and the train step's loss and update match
a plain Keras loss and AdamW step; the fused causal attention matches the masked one."""

import keras
import numpy as np
import pytest

from model.losses import causal_lm_loss
from model.transformer import DeepSeekV3CausalLM
from tests.model.helpers import random_tokens, small_config

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX-only steps")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return DeepSeekV3CausalLM(small_config())


def test_greedy_decoder_matches_generate(model):
    from model.jax_steps import GreedyDecoder

    prompts = random_tokens((3, 7), model.cfg.vocab_size, seed=1)
    expected = model.generate(prompts.tolist(), max_new_tokens=9, eos_token_id=-1)
    ours = GreedyDecoder(model, cache_dtype="float32")(prompts, max_new_tokens=9)
    assert ours.tolist() == expected


def test_fused_causal_attention_matches_the_masked_path(model):
    """mask None (the fused kernel on JAX) and an explicit all-ones segment mask agree."""
    ids = random_tokens((2, 16), model.cfg.vocab_size, seed=2)
    fused = model(ids)
    masked = model(ids, segment_ids=np.ones_like(ids))
    np.testing.assert_allclose(np.asarray(fused), np.asarray(masked), rtol=1e-5, atol=1e-5)


def test_train_step_matches_eager_loss_and_updates_weights(model):
    from model.jax_steps import make_train_step

    ids = random_tokens((2, 12), model.cfg.vocab_size, seed=4)
    expected = float(causal_lm_loss(model(ids, return_aux=True), ids)["loss"])
    step, state = make_train_step(model, keras.optimizers.AdamW(learning_rate=1e-3))
    before = [np.asarray(v) for v in state[0]]
    state, losses = step(state, ids)
    assert float(losses["loss"]) == pytest.approx(expected, rel=1e-5)
    changed = [not np.allclose(b, np.asarray(a)) for b, a in zip(before, state[0])]
    assert sum(changed) > len(changed) // 2  # AdamW moved (almost) every weight
    state, second = step(state, ids)
    assert float(second["loss"]) < float(losses["loss"])
