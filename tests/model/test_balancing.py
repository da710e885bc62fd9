"""Auxiliary-loss-free balancing: on a skewed token stream, repeated bias updates bring
MaxVio down; the sequence-wise balance term follows the paper's definition."""

import keras
import numpy as np
from keras import ops

from model.balancing import bias_update, max_violation
from model.config import ModelConfig
from model.moe import sequence_balance_term
from model.router import Router
from model.transformer import DeepSeekV3CausalLM
from tests.model.helpers import small_config


def test_bias_update_rule():
    load = np.array([[10.0, 0.0, 5.0, 5.0]])
    np.testing.assert_allclose(ops.convert_to_numpy(bias_update(load, 0.001)), [[-0.001, 0.001, 0.0, 0.0]])
    np.testing.assert_allclose(ops.convert_to_numpy(max_violation(load)), [1.0])


def test_bias_updates_reduce_max_violation_on_a_skewed_stream():
    """Tokens share a common direction that the router's weights favour for the
    high-numbered experts, so routing starts skewed; the bias rule evens it out."""
    cfg = small_config(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    router = Router(cfg)
    router.build((None, cfg.hidden_size))
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(cfg.hidden_size).astype("float32")
    direction /= np.linalg.norm(direction)
    skew = np.linspace(-1.0, 1.0, cfg.n_routed_experts)[:, None] * direction[None, :]
    router.weight.assign((rng.standard_normal((16, cfg.hidden_size)) * 0.1 + skew).astype("float32"))

    history = []
    for _ in range(150):
        x = (2.0 * direction + rng.standard_normal((512, cfg.hidden_size)) * 0.5).astype("float32")
        indices, _, _ = router(x)
        load = ops.bincount(ops.reshape(indices, (-1,)), minlength=16)
        history.append(float(max_violation(load)))
        bias = router.e_score_correction_bias
        bias.assign(bias + bias_update(load, gamma=0.01))
    start, end = np.mean(history[:5]), np.mean(history[-10:])
    print(f"MaxVio: {start:.3f} over the first 5 batches -> {end:.3f} over the last 10")
    assert start > 1.0
    assert end < 0.25 * start
    biases = ops.convert_to_numpy(router.e_score_correction_bias)
    assert biases[-1] < 0 < biases[0]  # favoured experts pushed down, neglected ones up


def test_model_applies_one_update_per_moe_layer():
    keras.utils.set_random_seed(0)
    cfg = small_config()
    model = DeepSeekV3CausalLM(cfg)
    loads = model(np.arange(64, dtype="int32").reshape(2, 32), return_aux=True)["expert_loads"]
    loads = ops.convert_to_numpy(loads)
    model.update_router_biases(loads, gamma=0.5)
    for moe, load in zip(model.moe_layers(), loads):
        expected = 0.5 * np.sign(load.mean() - load)
        np.testing.assert_allclose(ops.convert_to_numpy(moe.gate.e_score_correction_bias), expected)


def test_sequence_balance_term():
    """Uniform routing gives sum_i f_i P_i = 1; routing collapsed onto K experts that
    also hold all the score mass gives the maximum, E/K."""
    cfg = ModelConfig.from_preset("tiny")  # 16 experts, 4 per token
    tokens = 16
    scores = np.full((tokens, 16), 0.5, "float32")
    uniform = np.array([[(4 * t + j) % 16 for j in range(4)] for t in range(tokens)], "int32")
    assert float(sequence_balance_term(scores, uniform, 1, cfg)) == 1.0
    collapsed = np.tile(np.arange(4, dtype="int32"), (tokens, 1))
    scores_collapsed = np.full((tokens, 16), 1e-6, "float32")
    scores_collapsed[:, :4] = 1.0
    assert float(sequence_balance_term(scores_collapsed, collapsed, 1, cfg)) > 3.99
