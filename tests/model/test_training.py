"""The tiny preset learns: a few AdamW steps on the full objective (CE + MTP + balance)
lower the loss, and the router biases move with the loads."""

import keras
import numpy as np
import pytest
from keras import ops

from model.losses import causal_lm_loss, shifted_cross_entropy
from model.transformer import DeepSeekV3CausalLM
from tests.model.helpers import random_tokens, value_and_grad


@pytest.mark.slow
def test_tiny_model_trains_and_router_biases_move(tiny_config):
    keras.utils.set_random_seed(0)
    model = DeepSeekV3CausalLM(tiny_config)
    optimizer = keras.optimizers.AdamW(learning_rate=3e-3, beta_1=0.9, beta_2=0.95, weight_decay=0.1,
                                       clipnorm=1.0)
    tokens = random_tokens((4, 32), tiny_config.vocab_size)
    losses = []

    def objective():
        out = model(tokens, return_aux=True)
        parts = causal_lm_loss(out, tokens, mtp_lambda=0.3)
        return parts["loss"], {"loads": out["expert_loads"], "mtp_loss": parts["mtp_loss"]}

    for _ in range(6):
        (loss, aux), grads = value_and_grad(model, objective)
        optimizer.apply(grads, model.trainable_variables)
        model.update_router_biases(aux["loads"], gamma=1e-3)
        losses.append(float(loss))
    print("losses:", [round(x, 3) for x in losses])
    assert losses[-1] < losses[0] - 1.0
    assert float(aux["mtp_loss"]) > 0
    biases = np.stack([ops.convert_to_numpy(m.gate.e_score_correction_bias) for m in model.moe_layers()])
    assert np.abs(biases).max() > 0
    np.testing.assert_allclose(np.abs(biases), np.round(np.abs(biases) / 1e-3) * 1e-3, atol=1e-6)  # steps of gamma


def test_shifted_cross_entropy_targets_and_masks():
    """Logits that put all mass on token i + shift give ~0 loss at that shift only;
    masked targets and targets in another segment do not count."""
    vocab, tokens = 11, np.array([[1, 2, 3, 4, 5, 6]], "int32")
    for shift in (1, 2):
        logits = np.full((1, 6, vocab), -30.0, "float32")
        for i in range(6 - shift):
            logits[0, i, tokens[0, i + shift]] = 30.0
        assert float(shifted_cross_entropy(logits, tokens, shift)) < 1e-6
        assert float(shifted_cross_entropy(logits, tokens, 3 - shift)) > 10
    logits = np.full((1, 6, vocab), -30.0, "float32")
    logits[0, :, 0] = 30.0                            # always wrong except where masked out
    logits[0, 0, 2] = 60.0                            # position 0 predicts token 1 (=2) correctly
    mask = np.array([[1, 1, 0, 0, 0, 0]])             # only target 1 counts
    assert float(shifted_cross_entropy(logits, tokens, 1, loss_mask=mask)) < 1e-6
    segments = np.array([[1, 1, 2, 2, 2, 2]])
    good = np.full((1, 6, vocab), -30.0, "float32")
    for i in range(5):
        good[0, i, tokens[0, i + 1]] = 30.0
    good[0, 1, tokens[0, 2]] = -30.0                  # the cross-document target is wrong...
    assert float(shifted_cross_entropy(good, tokens, 1, segment_ids=segments)) < 1e-6  # ...and ignored
