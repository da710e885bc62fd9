"""Expert parallelism (JAX backend): the routed experts sharded over the mesh axis
"expert", tokens sent to the devices that own their experts by all-to-all and their
outputs sent back the same way (DeepSeek-V3 §3.2: EP with all-to-all dispatch/combine).

It is active while a keras.distribution whose device mesh has an "expert" axis is set
(stages/trainer/jax_parallel.py sets one); RoutedExperts then calls
`expert_parallel_ffn` instead of computing every expert locally. Tokens are sharded over
every mesh axis (each device routes its own tokens), expert weights over "expert" only.

Inside jax.shard_map, on each device (T local tokens, K experts each, E_l local experts):

    sort the T*K assignments by expert -> destination device = expert // E_l
    send buffer [ep, C, H]: the rows for device d in block d (slot = rank within d)
    all_to_all                      -> the rows other devices chose my experts for
    regroup them by local expert, grouped SwiGLU of my E_l experts (model/experts.py;
    padding rows are zeros and give zeros), all_to_all back, un-permute, weight, sum over K

With one expert device and no capacity the buffer is exactly the sorted assignments, so
that case (one GPU) does the work of the local path plus the (trivial) all-to-alls.

Dropless by default: each block holds C = T*K rows, the most any device can send to one
peer, so no assignment is ever dropped whatever the routing (the buffers are ep times the
rows, the price of static shapes on XLA:CPU, which lacks ragged all-to-all).
`capacity_factor` > 0 is the documented fallback: C = capacity_factor * T*K / ep rows
per peer; assignments past it are dropped (contribute zero) and counted, never silently.
"""

import functools
import math

import jax
import jax.numpy as jnp
import keras
from jax.sharding import PartitionSpec as P

EXPERT_AXIS = "expert"


def active_dispatch():
    """expert_parallel_ffn bound to the current keras.distribution's mesh when that mesh
    has an "expert" axis (its `capacity_factor` attribute, if any, picks the fallback);
    None otherwise."""
    distribution = keras.distribution.distribution()
    if distribution is None or EXPERT_AXIS not in distribution.device_mesh.axis_names:
        return None
    return functools.partial(expert_parallel_ffn, mesh=distribution.device_mesh.backend_mesh,
                             capacity_factor=getattr(distribution, "capacity_factor", 0.0))


def rows_per_peer(assignments: int, ep: int, capacity_factor: float) -> int:
    """C: rows each device may send to each peer (dropless: all of its assignments)."""
    if capacity_factor <= 0:
        return assignments
    return max(1, min(assignments, math.ceil(capacity_factor * assignments / ep)))


def _local_ffn(x, indices, weights, w_gate, w_up, w_down, *, axes: tuple, ep: int, capacity_factor: float, impl,
               fp8: bool):
    from model.experts import grouped_swiglu

    tokens, top_k = indices.shape
    local_experts = w_gate.shape[0]
    assignments = tokens * top_k
    capacity = rows_per_peer(assignments, ep, capacity_factor)
    flat = indices.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sorted_experts = flat[order]
    destination = sorted_experts // local_experts
    sent = jnp.zeros((ep,), jnp.int32).at[destination].add(1)
    rank = jnp.arange(assignments, dtype=jnp.int32) - (jnp.cumsum(sent) - sent)[destination]
    kept = rank < capacity
    # slot of each sorted assignment in the send buffer; dropped ones point past its end
    slot = jnp.where(kept, destination * capacity + rank, ep * capacity)
    # one peer and room for every row: the buffer is the sorted assignments themselves
    identity = ep == 1 and capacity == assignments
    if identity:
        send_rows, send_experts = jnp.take(x, order // top_k, axis=0), sorted_experts
    else:
        source = jnp.zeros((ep * capacity + 1,), jnp.int32).at[slot].set(order // top_k + 1)[:-1]
        send_rows = jnp.take(x, jnp.maximum(source - 1, 0), axis=0) * (source > 0)[:, None].astype(x.dtype)
        # padding rows are zero: they join the last local expert and give zero outputs and gradients
        send_experts = jnp.full((ep * capacity + 1,), local_experts - 1, jnp.int32).at[slot].set(
            sorted_experts % local_experts)[:-1]

    def exchange(a):
        return jax.lax.all_to_all(a.reshape(ep, capacity, *a.shape[1:]), EXPERT_AXIS, 0, 0).reshape(a.shape)

    rows, experts = exchange(send_rows), exchange(send_experts % local_experts)
    if ep > 1:  # rows arrive grouped by sender: regroup them by local expert
        regroup = jnp.argsort(experts, stable=True)
        rows, experts = jnp.take(rows, regroup, axis=0), experts[regroup]
    counts = jnp.zeros((local_experts,), jnp.int32).at[experts].add(1)
    out = grouped_swiglu(rows, None, experts, counts, w_gate, w_up, w_down, impl, fp8)
    if ep > 1:
        out = jnp.take(out, jnp.argsort(regroup), axis=0)
    returned = exchange(out)
    # each (token, k) assignment's row: its sorted position's slot
    slot_of_assignment = slot[jnp.argsort(order)]
    if not identity:
        returned = jnp.concatenate([returned, jnp.zeros((1, out.shape[-1]), out.dtype)])
    per_assignment = jnp.take(returned, slot_of_assignment, axis=0)
    y = jnp.sum(per_assignment.reshape(tokens, top_k, -1) * weights[..., None].astype(out.dtype), axis=1)
    dropped = jax.lax.psum(jnp.sum(~kept, dtype=jnp.int32), axes)
    return y.astype(x.dtype), dropped


def expert_parallel_ffn(x, indices, weights, w_gate, w_up, w_down, mesh, capacity_factor: float = 0.0,
                        impl: str | None = None, fp8: bool = False):
    """sum_k weight[t, k] * SwiGLU_{expert[t, k]}(x[t]) with experts sharded over mesh's
    "expert" axis. x [T, H] and indices, weights [T, K] are sharded over every mesh axis
    on T; w_gate, w_up [E, H, I] and w_down [E, I, H] over "expert" on E.
    Returns (y [T, H], dropped assignments over the whole mesh: 0 unless capacity_factor > 0)."""
    axes = tuple(mesh.axis_names)
    ep = mesh.shape[EXPERT_AXIS]
    if w_gate.shape[0] % ep:
        raise ValueError(f"{w_gate.shape[0]} routed experts cannot be split over an expert axis of {ep}")
    tokens = P(axes)
    experts = P(EXPERT_AXIS)

    def body(x, indices, weights, w_gate, w_up, w_down):
        return _local_ffn(x, indices, weights, w_gate, w_up, w_down, axes=axes, ep=ep, capacity_factor=capacity_factor,
                          impl=impl, fp8=fp8)

    return jax.shard_map(body, mesh=mesh, in_specs=(tokens, tokens, tokens, experts, experts, experts),
                         out_specs=(tokens, P()), check_vma=False)(x, indices, weights, w_gate, w_up, w_down)
