"""GRPO maths against hand computations on small fixed examples."""

import math

import numpy as np
import pytest
import tensorflow as tf

from stages.posttrain.grpo_loss import group_advantages, grpo_loss, k3_kl, token_log_probs


def test_group_advantages_by_hand():
    adv = group_advantages([1, 0, 0, 1, 1, 1, 1, 1, 2, 0, 0, 0], group_size=4)
    std = math.sqrt(4 * 0.25 / 3)                      # sample std of [1, 0, 0, 1]
    np.testing.assert_allclose(adv[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4), rtol=1e-6)
    np.testing.assert_array_equal(adv[4:8], 0)         # equal rewards: no signal
    std3 = math.sqrt((1.5 ** 2 + 3 * 0.5 ** 2) / 3)
    np.testing.assert_allclose(adv[8:], np.array([1.5, -0.5, -0.5, -0.5]) / (std3 + 1e-4), rtol=1e-6)
    # Dr. GRPO: the mean only
    np.testing.assert_allclose(group_advantages([1, 0, 0, 1], 4, scale_rewards=False), [0.5, -0.5, -0.5, 0.5])
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages([1, 0, 1], 4)


def test_k3_by_hand():
    kl = k3_kl(tf.math.log([0.5, 0.25, 0.3]), tf.math.log([0.25, 0.25, 0.6])).numpy()
    expected = [0.5 - math.log(0.5) - 1, 0.0, 2.0 - math.log(2.0) - 1]
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    assert (kl >= 0).all()


# two completions: 3 tokens and 1 token (then padding)
MASK = np.array([[1, 1, 1], [1, 0, 0]], np.float32)
OLD = np.log(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], np.float32))
NEW = np.log(np.array([[0.75, 0.3, 0.5], [0.2, 0.9, 0.9]], np.float32))     # ratios 1.5, 0.6, 1 | 0.4
REF = np.log(np.array([[0.5, 0.6, 0.25], [0.2, 0.5, 0.5]], np.float32))
ADV = np.array([1.0, -2.0], np.float32)


def _by_hand(beta):
    ratio = np.exp(NEW - OLD)
    clipped = np.clip(ratio, 0.8, 1.2)
    objective = np.minimum(ratio * ADV[:, None], clipped * ADV[:, None])
    # row 0 (A = +1): 1.5 -> clipped to 1.2; 0.6 stays; 1 stays. row 1 (A = -2): 0.4 -> 0.8 (clipped)
    np.testing.assert_allclose(objective[0], [1.2, 0.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(objective[1, 0], -1.6, rtol=1e-6)
    kl = np.exp(REF - NEW) - (REF - NEW) - 1
    return -(objective - beta * kl), kl


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_grpo_loss_aggregations_by_hand(loss_type):
    per_token, kl = _by_hand(beta=0.04)
    out = grpo_loss(NEW, OLD, REF, ADV, MASK, 0.2, 0.2, 0.04, loss_type, max_completion_length=3)
    masked = per_token * MASK
    expected = {"grpo": np.mean([masked[0].sum() / 3, masked[1].sum() / 1]),
                "bnpo": masked.sum() / 4,
                "dr_grpo": masked.sum() / (2 * 3)}[loss_type]
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(out["kl"]) == pytest.approx((kl * MASK).sum() / 4, rel=1e-5)
    assert float(out["clip_fraction"]) == pytest.approx(2 / 4)     # 1.5 (A > 0) and 0.4 (A < 0)


def test_asymmetric_clip_and_errors():
    # epsilon_high 0.6 (DAPO's clip-higher) lets ratio 1.5 through for A > 0
    out = grpo_loss(NEW, OLD, REF, ADV, MASK, 0.2, 0.6, 0.0, "bnpo")
    assert float(out["clip_fraction"]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="one of grpo, bnpo, dr_grpo"):
        grpo_loss(NEW, OLD, REF, ADV, MASK, loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(NEW, OLD, REF, ADV, MASK, loss_type="dr_grpo")


def test_one_update_without_kl_is_reinforce_with_group_baseline():
    """beta = 0, pi_old = pi_theta (held constant): the gradient is that of
    -(1/B) sum_i A_i / |o_i| sum_t log pi(o_t), REINFORCE with the group mean as baseline."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 7, (4, 6)).astype(np.int32)
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], np.float32)
    adv = group_advantages([1.0, 0.0, 0.5, 0.0], group_size=4)
    logits = tf.Variable(rng.normal(size=(4, 6, 7)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        log_probs = token_log_probs(logits, tokens)
        grpo = grpo_loss(log_probs, tf.stop_gradient(log_probs), None, adv, mask, beta=0.0)["loss"]
        reinforce = -tf.reduce_mean(adv * tf.reduce_sum(log_probs * mask, 1) / tf.reduce_sum(mask, 1))
    assert float(grpo) == pytest.approx(-float(np.mean(adv)), abs=1e-6)   # ratio 1: -mean(A) = 0
    np.testing.assert_allclose(tape.gradient(grpo, logits).numpy(), tape.gradient(reinforce, logits).numpy(),
                               atol=1e-7)
    assert np.abs(tape.gradient(grpo, logits).numpy()).sum() > 0
