"""Routed experts through a grouped GEMM on Hopper GPUs (JAX backend, bf16/fp16).

The kernels are JAX's own Pallas Mosaic-GPU ones (jax.experimental.pallas.ops.gpu):
`ragged_dot` multiplies rows sorted by group with their group's matrix, and
`transposed_ragged_dot` gives the per-group weight gradient x_g^T dy_g. Neither has a
VJP, so `grouped_matmul` below wires the backward pass from them:

    y = x @ w[g]          dx = dy @ w[g]^T  (ragged_dot, transposed rhs)
                          dw[g] = x_g^T dy_g  (transposed_ragged_dot; zero for empty groups)

Unlike jax.lax.ragged_dot on GPU, no group runs on rows that are not its own.
"""

import jax
import jax.numpy as jnp

# Tile sizes; the benchmark may overwrite these with the fastest it measured.
FORWARD_TILES = dict(block_m=128, block_n=128, block_k=64, max_concurrent_steps=4, grid_block_n=1)
WEIGHT_GRAD_TILES = dict(block_m=128, block_n=128, block_k=64, max_concurrent_steps=4, grid_block_n=1)


def grouped_gemm_supported(dtype) -> bool:
    """True on a Hopper (sm_90) GPU for 16-bit floats."""
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return False
    device = jax.devices()[0]
    return device.platform == "gpu" and getattr(device, "compute_capability", "") == "9.0"


def _kernels():
    from jax.experimental.pallas.ops.gpu import ragged_dot_mgpu, transposed_ragged_dot_mgpu

    return ragged_dot_mgpu.ragged_dot, transposed_ragged_dot_mgpu.transposed_ragged_dot


@jax.custom_vjp
def grouped_matmul(x, w, group_sizes):
    """x [M, K] sorted by group, w [G, K, N], group_sizes [G] int32 (sum = M) -> [M, N]."""
    ragged_dot, _ = _kernels()
    return ragged_dot(x, w, group_sizes=group_sizes, **FORWARD_TILES)


def _forward(x, w, group_sizes):
    return grouped_matmul(x, w, group_sizes), (x, w, group_sizes)


def grouped_weight_grad(x, dy, group_sizes):
    """Per group g: x_g^T dy_g -> [G, K, N] float32 (zero for empty groups, which the
    kernel leaves unwritten)."""
    _, transposed_ragged_dot = _kernels()
    dw = transposed_ragged_dot(x, dy.astype(x.dtype), group_sizes=group_sizes, **WEIGHT_GRAD_TILES)
    return jnp.where((group_sizes > 0)[:, None, None], dw, 0).astype(jnp.float32)


def _backward(saved, dy):
    x, w, group_sizes = saved
    ragged_dot, _ = _kernels()
    dy = dy.astype(x.dtype)
    dx = ragged_dot(dy, w, group_sizes=group_sizes, transpose_rhs=True, **FORWARD_TILES)
    return dx, grouped_weight_grad(x, dy, group_sizes).astype(w.dtype), None


grouped_matmul.defvjp(_forward, _backward)


def swiglu_grouped_gemm(x, token_of_row, counts, w_gate, w_up, w_down):
    """SwiGLU of each sorted row with its expert's weights -> [N, H] in sorted order."""
    sizes = counts.astype(jnp.int32)
    rows = x if token_of_row is None else jnp.take(x, token_of_row, axis=0)
    # gate and up in one GEMM of twice the width (fewer, fuller tiles)
    gate_up = grouped_matmul(rows, jnp.concatenate([w_gate, w_up], axis=-1), sizes)
    gate, up = jnp.split(gate_up, 2, axis=-1)
    return grouped_matmul(jax.nn.silu(gate) * up, w_down, sizes)
