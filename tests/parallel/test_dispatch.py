"""The all-to-all dispatch (model/expert_parallel.py) against the local grouped SwiGLU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from model.expert_parallel import expert_parallel_ffn
from model.experts import routed_expert_ffn
from stages.trainer import jax_parallel
from stages.trainer.config import DistributionConfig

TOKENS, HIDDEN, INTERMEDIATE, EXPERTS, TOP_K = 64, 16, 8, 16, 4


def _problem(seed, skew: bool):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(TOKENS, HIDDEN)).astype(np.float32)
    if skew:  # every token picks experts 0..3: all on the first device of the expert axis
        indices = np.tile(np.arange(TOP_K, dtype=np.int32), (TOKENS, 1))
    else:
        indices = np.stack([rng.choice(EXPERTS, TOP_K, replace=False) for _ in range(TOKENS)]).astype(np.int32)
    weights = rng.uniform(0.1, 1.0, (TOKENS, TOP_K)).astype(np.float32)
    w = [rng.normal(size=s).astype(np.float32) * 0.2 for s in
         ((EXPERTS, HIDDEN, INTERMEDIATE), (EXPERTS, HIDDEN, INTERMEDIATE), (EXPERTS, INTERMEDIATE, HIDDEN))]
    return x, indices, weights, w


def _run(mesh, x, indices, weights, w, capacity_factor=0.0, impl=None):
    jax_mesh = mesh.backend_mesh
    tokens = NamedSharding(jax_mesh, P(jax_parallel.AXES))
    experts = NamedSharding(jax_mesh, P("expert"))
    args = [jax.device_put(a, tokens) for a in (x, indices, weights)] + [jax.device_put(a, experts) for a in w]
    fn = jax.jit(lambda *a: expert_parallel_ffn(*a, mesh=jax_mesh, capacity_factor=capacity_factor,
                                                       impl=impl))
    return fn(*args)


@pytest.mark.parametrize("skew", [False, True], ids=["random-routing", "all-to-one-device"])
@pytest.mark.parametrize("impl", ["blocks", "capacity"])
@pytest.mark.parametrize("data, expert", [(2, 4), (8, 1)], ids=["2x4", "8x1"])
def test_dropless_dispatch_equals_local_experts(devices, skew, impl, data, expert):
    """8x1: one expert device, where the send buffer is the sorted assignments themselves."""
    x, indices, weights, w = _problem(0, skew)
    mesh = jax_parallel.make_mesh(DistributionConfig(data=data, expert=expert))
    expected = routed_expert_ffn(jnp.asarray(x), indices, weights, *w, impl="blocks")
    y, dropped = _run(mesh, x, indices, weights, w, impl=impl)
    assert int(dropped) == 0
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_dispatch_gradients_equal_local_experts(devices):
    x, indices, weights, w = _problem(1, skew=False)
    mesh = jax_parallel.make_mesh(DistributionConfig(data=2, expert=4)).backend_mesh

    def local(x, weights, *w):
        return jnp.sum(routed_expert_ffn(x, indices, weights, *w, impl="blocks") ** 2)

    def parallel(x, weights, *w):
        return jnp.sum(expert_parallel_ffn(x, indices, weights, *w, mesh=mesh)[0] ** 2)

    expected = jax.grad(local, argnums=(0, 1, 2, 3, 4))(x, weights, *w)
    got = jax.jit(jax.grad(parallel, argnums=(0, 1, 2, 3, 4)))(x, weights, *w)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_capacity_fallback_counts_exactly_what_it_drops(devices):
    """Skewed routing with capacity factor 1: each device's 8 tokens x 4 = 32 assignments
    all go to expert-device 0, which takes C = 32 / 4 = 8 rows from each peer. The rows
    are sorted by expert, so the 8 kept are expert 0's; the other 24 per device are
    dropped, counted, and contribute nothing."""
    x, indices, weights, w = _problem(2, skew=True)
    mesh = jax_parallel.make_mesh(DistributionConfig(data=2, expert=4))
    y, dropped = _run(mesh, x, indices, weights, w, capacity_factor=1.0)
    assignments = TOKENS // len(devices) * TOP_K
    capacity = assignments // 4
    assert int(dropped) == len(devices) * (assignments - capacity)
    kept_weights = np.where(indices == 0, weights, 0.0).astype(np.float32)
    expected = routed_expert_ffn(jnp.asarray(x), indices, kept_weights, *w, impl="blocks")
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_fp8_dispatch_equals_local_fp8_experts(devices):
    """The FP8 recipe through the all-to-all: the same outputs and input gradients as the
    local FP8 experts (each row's 1x128 tiles and each expert's weight blocks are the same
    wherever the row is computed). Weight gradients differ within FP8 error only: their
    128x1 tiles run over a device's sorted rows, which are not the local path's."""
    x, indices, weights, w = _problem(3, skew=False)
    mesh = jax_parallel.make_mesh(DistributionConfig(data=2, expert=4)).backend_mesh

    def local(x, *w):
        return jnp.sum(routed_expert_ffn(x, indices, weights, *w, impl="blocks", fp8=True) ** 2)

    def parallel(x, *w):
        return jnp.sum(expert_parallel_ffn(x, indices, weights, *w, mesh=mesh, impl="blocks", fp8=True)[0] ** 2)

    np.testing.assert_allclose(float(jax.jit(parallel)(x, *w)), float(local(x, *w)), rtol=1e-5)
    expected = jax.grad(local, argnums=(0, 1, 2, 3))(x, *w)
    got = jax.jit(jax.grad(parallel, argnums=(0, 1, 2, 3)))(x, *w)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(expected[0]), rtol=1e-4, atol=1e-5)
    for a, b in zip(got[1:], expected[1:]):
        assert np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b) < 0.05, "measured 1.9-2.9%"
