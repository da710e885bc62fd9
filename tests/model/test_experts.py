"""The routed experts' grouped matmul against a dense numpy reference: values, gradients,
experts with no tokens, and both implementations where the backend has them."""

import keras
import numpy as np
import pytest
from keras import ops

from model.experts import RoutedExperts, _block_size, routed_expert_ffn

IMPLS = ["blocks", "capacity"] + (["ragged_dot", "grouped_gemm"] if keras.backend.backend() == "jax" else [])


def silu(x):
    return x / (1 + np.exp(-x))


def reference(x, indices, weights, w_gate, w_up, w_down):
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(x.shape[0]):
        for e, w in zip(indices[t], weights[t]):
            out[t] += w * (silu(x[t] @ w_gate[e]) * (x[t] @ w_up[e])) @ w_down[e]
    return out


def make_inputs(tokens, experts, k, hidden=12, inter=8, seed=0, allowed=None):
    rng = np.random.default_rng(seed)
    pool = np.arange(experts) if allowed is None else np.asarray(allowed)
    indices = np.stack([rng.choice(pool, k, replace=False) for _ in range(tokens)]).astype("int32")
    weights = rng.uniform(0.1, 1.0, (tokens, k)).astype("float32")
    x = rng.standard_normal((tokens, hidden)).astype("float32")
    w = [rng.standard_normal(s).astype("float32") * 0.3
         for s in [(experts, hidden, inter), (experts, hidden, inter), (experts, inter, hidden)]]
    return x, indices, weights, w


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tokens, experts, k", [(1, 8, 2), (37, 8, 2), (300, 16, 4), (64, 4, 4)])
def test_matches_dense_reference(impl, tokens, experts, k):
    x, indices, weights, w = make_inputs(tokens, experts, k)
    ours = ops.convert_to_numpy(routed_expert_ffn(x, indices, weights, *w, impl=impl))
    np.testing.assert_allclose(ours, reference(x, indices, weights, *w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_experts_without_tokens(impl):
    """Only experts 2 and 5 receive tokens; the others must not disturb anything."""
    x, indices, weights, w = make_inputs(50, 8, 2, allowed=[2, 5])
    ours = ops.convert_to_numpy(routed_expert_ffn(x, indices, weights, *w, impl=impl))
    np.testing.assert_allclose(ours, reference(x, indices, weights, *w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_dense_reference(impl):
    """Gradients w.r.t. the expert weights: unused experts get exactly zero, the others
    match a dense formulation that runs every expert on every token and masks."""
    from tests.model.helpers import value_and_grad

    x, indices, weights, w = make_inputs(40, 8, 2, allowed=[0, 1, 3, 4, 6])
    layer = RoutedExperts(8, 12, 8, 0.02, impl=impl)
    layer.build()
    for variable, value in zip([layer.gate_proj, layer.up_proj, layer.down_proj], w):
        variable.assign(value)
    dense_weights = np.zeros((40, 8), "float32")
    np.put_along_axis(dense_weights, indices, weights, axis=-1)

    def dense_loss():
        h = ops.silu(ops.einsum("th,ehi->eti", x, layer.gate_proj)) * ops.einsum("th,ehi->eti", x, layer.up_proj)
        y = ops.einsum("eti,eih->eth", h, layer.down_proj)
        return ops.sum(ops.square(ops.einsum("eth,te->th", y, dense_weights)))

    _, ours = value_and_grad(layer, lambda: (ops.sum(ops.square(layer(x, indices, weights))), None))
    _, expected = value_and_grad(layer, lambda: (dense_loss(), None))
    for g, e in zip(ours, expected):
        np.testing.assert_allclose(ops.convert_to_numpy(g), ops.convert_to_numpy(e), rtol=1e-4, atol=1e-5)
    assert not ops.convert_to_numpy(ours[0])[[2, 5, 7]].any()


def test_block_size_tracks_rows_per_expert():
    assert _block_size(4, 16) == 1          # one decoding token: no expert is padded to a big block
    assert _block_size(8192, 16) == 64      # training batch: full blocks
    assert _block_size(300, 16) == 16


@pytest.mark.parametrize("impl", IMPLS)
def test_over_capacity_falls_back_without_dropping(impl):
    """Every token to the same two experts: far over the "capacity" layout's static bound."""
    x, indices, weights, w = make_inputs(64, 16, 2, allowed=[3, 9])
    ours = ops.convert_to_numpy(routed_expert_ffn(x, indices, weights, *w, impl=impl))
    np.testing.assert_allclose(ours, reference(x, indices, weights, *w), rtol=1e-4, atol=1e-5)


def test_capacity_is_static_and_covers_the_mean():
    from model.experts import _capacity

    assert _capacity(6, 64) == 8                      # one decoding token, top-6 of 64
    assert _capacity(8 * 4096 * 6, 64) % 128 == 0     # training batch: whole matmul tiles
    assert _capacity(8 * 4096 * 6, 64) >= 8 * 4096 * 6 / 64 * 1.25
