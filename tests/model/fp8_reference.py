"""An independent numpy implementation of DeepSeek-V3's FP8 recipe for the tests: explicit
loops over tiles, ml_dtypes' float8_e4m3fn for the rounding (round to nearest even)."""

import math

import ml_dtypes
import numpy as np

E4M3_MAX = 448.0


def fake_quantize(x, tile):
    """x [R, C] float -> each (tile[0] x tile[1]) tile rounded to E4M3 with scale
    amax / 448 (1 for an all-zero tile), then multiplied back, in float32. The scale is
    rounded as amax x float32(1/448): with BF16 inputs, x / scale often lands exactly on a
    midpoint between two E4M3 values, and one ulp of the scale decides the rounding."""
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    for i in range(math.ceil(x.shape[0] / tile[0])):
        for j in range(math.ceil(x.shape[1] / tile[1])):
            index = (slice(i * tile[0], (i + 1) * tile[0]), slice(j * tile[1], (j + 1) * tile[1]))
            amax = np.abs(x[index]).max()
            scale = amax * np.float32(1 / E4M3_MAX) if amax > 0 else np.float32(1)   # in float32
            out[index] = (x[index] / scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * scale
    return out


def linear(x, w, dy):
    """y = x W, dx, dW as the recipe computes them (float64 products of the rounded operands)."""
    xq, wq = fake_quantize(x, (1, 128)), fake_quantize(w, (128, 128))
    y = xq.astype(np.float64) @ wq
    dx = fake_quantize(dy, (1, 128)).astype(np.float64) @ wq.T
    # Wgrad re-tiles the cached FP8 activation (already on the 1x128 grid) to 128x1
    dw = fake_quantize(xq, (128, 1)).astype(np.float64).T @ fake_quantize(dy, (128, 1))
    return y, dx, dw
