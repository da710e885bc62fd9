"""The router against a numpy transcription of DeepSeek-V3's Gate (noaux_tc, -inf group
mask), and the properties that implementations most often get wrong."""

import numpy as np
import pytest
from keras import ops

from model.router import Router
from tests.model.helpers import small_config


def reference_gate(x, weight, bias, n_group, topk_group, top_k, scaling, normalise):
    """float64 reference: sigmoid scores, bias for selection only, groups by top-2 sum."""
    scores = 1 / (1 + np.exp(-(x @ weight.T)))
    biased = scores + bias
    tokens, experts = biased.shape
    grouped = biased.reshape(tokens, n_group, experts // n_group)
    group_scores = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
    kept = np.argsort(-group_scores, axis=-1)[:, :topk_group]
    mask = np.zeros((tokens, n_group), bool)
    np.put_along_axis(mask, kept, True, axis=-1)
    biased = np.where(np.repeat(mask, experts // n_group, axis=-1), biased, -np.inf)
    indices = np.argsort(-biased, axis=-1)[:, :top_k]
    weights = np.take_along_axis(scores, indices, -1)
    if normalise:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return indices, weights * scaling


def make_router(cfg, bias, seed=0):
    router = Router(cfg)
    router.build((None, cfg.hidden_size))
    rng = np.random.default_rng(seed)
    router.weight.assign(rng.standard_normal((cfg.n_routed_experts, cfg.hidden_size)).astype("float32") * 0.3)
    router.e_score_correction_bias.assign(np.asarray(bias, "float32"))
    return router


def route(router, x):
    indices, weights, scores = router(x)
    return ops.convert_to_numpy(indices), ops.convert_to_numpy(weights), ops.convert_to_numpy(scores)


@pytest.mark.parametrize("n_group, topk_group, top_k, normalise, scaling", [
    (4, 2, 2, True, 2.5), (1, 1, 3, True, 1.0), (8, 3, 4, False, 1.5), (2, 1, 2, True, 16.0)])
def test_matches_reference(n_group, topk_group, top_k, normalise, scaling):
    cfg = small_config(n_routed_experts=16, n_group=n_group, topk_group=topk_group, num_experts_per_tok=top_k,
                       norm_topk_prob=normalise, routed_scaling_factor=scaling)
    rng = np.random.default_rng(1)
    bias = rng.normal(0, 0.1, 16)
    router = make_router(cfg, bias)
    x = rng.standard_normal((64, cfg.hidden_size)).astype("float32")
    indices, weights, _ = route(router, x)
    ref_indices, ref_weights = reference_gate(x.astype(np.float64), ops.convert_to_numpy(router.weight).astype(np.float64),
                                              bias.astype(np.float32).astype(np.float64), n_group, topk_group,
                                              top_k, scaling, normalise)
    np.testing.assert_array_equal(np.sort(indices, -1), np.sort(ref_indices, -1))
    order, ref_order = np.argsort(indices, -1), np.argsort(ref_indices, -1)
    np.testing.assert_allclose(np.take_along_axis(weights, order, -1), np.take_along_axis(ref_weights, ref_order, -1),
                               rtol=1e-5)


def test_bias_changes_selection_not_weight_values():
    cfg = small_config(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    x = np.random.default_rng(2).standard_normal((128, cfg.hidden_size)).astype("float32")
    plain = route(make_router(cfg, np.zeros(16)), x)
    bias = np.zeros(16)
    bias[[3, 7, 11]] = 0.5  # favour three experts
    biased = route(make_router(cfg, bias), x)
    assert (np.sort(plain[0], -1) != np.sort(biased[0], -1)).any(axis=-1).mean() > 0.5
    assert np.isin(biased[0], [3, 7, 11]).sum() > np.isin(plain[0], [3, 7, 11]).sum()
    # the weights are the UNBIASED scores of the chosen experts, normalised and scaled
    scores = biased[2]
    chosen = np.take_along_axis(scores, biased[0], -1)
    np.testing.assert_allclose(biased[1], chosen / chosen.sum(-1, keepdims=True) * cfg.routed_scaling_factor, rtol=1e-6)
    np.testing.assert_allclose(scores, plain[2], rtol=1e-6)  # the bias never touches the scores


def test_masked_groups_never_selected_with_negative_biased_scores():
    """With every biased score negative, a 0 fill for masked groups would make masked
    experts win the top-k; the -inf fill never selects them."""
    cfg = small_config(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    bias = np.full(16, -5.0)
    bias[0:4] = -2.0   # groups 0 and 1 are the best two groups for every token
    bias[4:8] = -3.0
    x = np.random.default_rng(3).standard_normal((256, cfg.hidden_size)).astype("float32")
    indices, weights, _ = route(make_router(cfg, bias), x)
    assert indices.max() < 8, "an expert of a masked group was selected"
    assert np.isfinite(weights).all()


def test_weights_sum_to_scaling_factor():
    cfg = small_config(n_routed_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4, routed_scaling_factor=2.5)
    x = np.random.default_rng(4).standard_normal((64, cfg.hidden_size)).astype("float32")
    _, weights, _ = route(make_router(cfg, np.zeros(16)), x)
    np.testing.assert_allclose(weights.sum(-1), 2.5, rtol=1e-6)
    assert weights.dtype == np.float32


def test_router_stays_float32_under_mixed_precision():
    cfg = small_config()
    router = Router(cfg, dtype="mixed_bfloat16")
    assert router.compute_dtype == "float32" and router.variable_dtype == "float32"
