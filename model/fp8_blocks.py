"""Block-scaled FP8 weights as stored in DeepSeek-V3's hub checkpoint.

A float8_e4m3 weight W [out, in] comes with `weight_scale_inv` S of shape
[ceil(out / 128), ceil(in / 128)] (float32); the real weight is W * S, blockwise:
W[i, j] * S[i // 128, j // 128] (DeepSeek-V3 inference/kernel.py `weight_dequant`;
the paper's §3.3.2 128x128 weight blocks). The quantizer is the inverse, used by tests
to make FP8 checkpoints: S = amax(|block|) / 448 (E4M3's largest finite value).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

FP8_E4M3_MAX = 448.0
DEFAULT_BLOCK = (128, 128)


def scale_shape(shape: tuple[int, int], block: tuple[int, int] = DEFAULT_BLOCK) -> tuple[int, int]:
    return (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))


def dequantize(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int] = DEFAULT_BLOCK,
               dtype=np.float32) -> np.ndarray:
    """W * S blockwise -> [out, in] in `dtype`. One row block at a time, so the extra
    memory is one block row, not a second full-size float32 copy."""
    out_dim, in_dim = weight.shape
    result = np.empty((out_dim, in_dim), dtype)
    for i in range(scale_inv.shape[0]):
        rows = slice(i * block[0], (i + 1) * block[0])
        column_scale = np.repeat(scale_inv[i].astype(np.float32), block[1])[:in_dim]
        result[rows] = weight[rows].astype(np.float32) * column_scale
    return result


def quantize(weight: np.ndarray, block: tuple[int, int] = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """W [out, in] float -> (float8_e4m3fn W/S, float32 S) with one scale per block."""
    weight = np.asarray(weight, np.float32)
    rows, cols = scale_shape(weight.shape, block)
    scale = np.ones((rows, cols), np.float32)
    quantized = np.empty(weight.shape, ml_dtypes.float8_e4m3fn)
    for i in range(rows):
        for j in range(cols):
            index = (slice(i * block[0], (i + 1) * block[0]), slice(j * block[1], (j + 1) * block[1]))
            amax = float(np.abs(weight[index]).max())
            scale[i, j] = amax / FP8_E4M3_MAX if amax > 0 else 1.0
            quantized[index] = (weight[index] / scale[i, j]).astype(ml_dtypes.float8_e4m3fn)
    return quantized, scale
