"""A GEMM on E4M3 operands with DeepSeek-V3's fine-grained scales, as a Pallas kernel (JAX):

    out[m, n] = sum over K-blocks k of (A[m, k-block] . B[k-block, n]) * a_scale[m, k] * b_scale[k, n]

A [M, K] float8_e4m3fn with a_scale [M, K/128] (its 1x128 tiles); B [K, N] float8_e4m3fn
with b_scale [K/128, N] (a 128x128 weight block's scale repeated over the block's columns,
or the 128x1 tiles of Wgrad, one scale per column and K-block). Each 128-deep partial
product comes from the FP8 tensor cores and is scaled and added in FP32 registers: the
paper's promotion to CUDA cores every N_C = 128 elements (§3.3.2), without which Hopper's
FP8 accumulation keeps only about 14 bits.

On a Hopper GPU the kernel lowers through Pallas' Triton backend (FP8 wgmma). With
interpret=True it runs anywhere through Pallas' interpreter: how the CPU tests check it
against the numpy reference. `operands` turns model/fp8.py's Quantized tiles into A or B.

Not yet run on a GPU (no device time was left when it was written): so it is off by default
(MODE below), and benchmarks/fp8_layers.py times it beside the dequantised path on Hopper.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from model import fp8

# "off" (the default until the kernel has run on a GPU): the linear layers dequantise their
# operands and multiply those; "hopper": this kernel on a Hopper GPU (sm_90), dequantised
# elsewhere; "interpret": this kernel through Pallas' interpreter on any device (CPU tests).
MODE = "off"


def on_hopper() -> bool:
    if jax.default_backend() != "gpu":
        return False
    return getattr(jax.devices()[0], "compute_capability", "") == "9.0"


def enabled() -> bool:
    return MODE == "interpret" or (MODE == "hopper" and on_hopper())


def _kernel(a_ref, b_ref, a_scale_ref, b_scale_ref, out_ref, *, k_blocks: int):
    def accumulate(k, total):
        a = a_ref[:, pl.ds(k * fp8.TILE, fp8.TILE)]
        b = b_ref[pl.ds(k * fp8.TILE, fp8.TILE), :]
        partial = jnp.dot(a, b, preferred_element_type=jnp.float32)
        return total + partial * a_scale_ref[:, pl.ds(k, 1)] * b_scale_ref[pl.ds(k, 1), :]

    total = jax.lax.fori_loop(0, k_blocks, accumulate, jnp.zeros(out_ref.shape, jnp.float32))
    out_ref[...] = total.astype(out_ref.dtype)


def _pad_rows(x, multiple: int, value=0):
    extra = (-x.shape[0]) % multiple
    return x if not extra else jnp.pad(x, ((0, extra), (0, 0)), constant_values=value)


def scaled_matmul(a, a_scale, b, b_scale, out_dtype=jnp.bfloat16, block_m: int = 128, block_n: int = 128):
    """A [M, K] e4m3, a_scale [M, K/128], B [K, N] e4m3, b_scale [K/128, N] -> [M, N] out_dtype.
    K must be a multiple of 128 (fp8.quantize pads it); M and N are padded to the blocks."""
    return _scaled_matmul(a, a_scale, b, b_scale, jnp.dtype(out_dtype), block_m, block_n, MODE == "interpret")


@functools.partial(jax.jit, static_argnames=("out_dtype", "block_m", "block_n", "interpret"))
def _scaled_matmul(a, a_scale, b, b_scale, out_dtype, block_m: int, block_n: int, interpret: bool):
    (m, k), n = a.shape, b.shape[1]
    if k % fp8.TILE or b.shape[0] != k or a_scale.shape != (m, k // fp8.TILE) \
            or b_scale.shape != (k // fp8.TILE, n):
        raise ValueError(f"scaled_matmul: A {a.shape} with scales {a_scale.shape}, B {b.shape} with scales "
                         f"{b_scale.shape}: K must be a multiple of {fp8.TILE} and the scales one per 128 of K")
    a, a_scale = _pad_rows(a, block_m), _pad_rows(a_scale, block_m, 1)
    b, b_scale = _pad_rows(b.T, block_n).T, _pad_rows(b_scale.T, block_n, 1).T
    padded_m, padded_n = a.shape[0], b.shape[1]
    out = pl.pallas_call(
        functools.partial(_kernel, k_blocks=k // fp8.TILE),
        out_shape=jax.ShapeDtypeStruct((padded_m, padded_n), out_dtype),
        grid=(padded_m // block_m, padded_n // block_n),
        in_specs=[pl.BlockSpec((block_m, k), lambda i, j: (i, 0)),
                  pl.BlockSpec((k, block_n), lambda i, j: (0, j)),
                  pl.BlockSpec((block_m, k // fp8.TILE), lambda i, j: (i, 0)),
                  pl.BlockSpec((k // fp8.TILE, block_n), lambda i, j: (0, j))],
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
        interpret=interpret,
    )(a, b, a_scale, b_scale)
    return out[:m, :n]


def operands(q: fp8.Quantized, transpose: bool = False):
    """Quantized 2-D tiles -> (values, scales) as scaled_matmul's A or B, contracting over
    the padded dim the tiles run along (their 128): 1x128 tiles give A [R, C] with scales
    [R, C/128]; 128x1 tiles give B [R, C] with scales [R/128, C]; 128x128 blocks give B with
    each block's scale repeated over its columns. transpose: the operand of q's transpose
    (W^T for Dgrad, x^T for Wgrad), values and scales swapped alike."""
    values, scales = q.values, q.scales           # [R/tr, tr, C/tc, tc], [R/tr, 1, C/tc, 1]
    row_tiles, tr, col_tiles, tc = values.shape
    values = values.reshape(row_tiles * tr, col_tiles * tc)
    scales = scales.reshape(row_tiles, col_tiles)
    if (tr, tc) == fp8.WEIGHT_BLOCK:
        scales = jnp.repeat(scales, tc, axis=1) if not transpose else jnp.repeat(scales.T, tr, axis=1)
        return (values.T, scales) if transpose else (values, scales)
    if transpose:
        values, scales = values.T, scales.T
    return values, scales
