"""DeepSeek-V3's fine-grained FP8 numerics (paper §3.3), in keras.ops for both backends.

Every GEMM operand is E4M3 (largest finite value 448) times a float32 scale, with one scale
per tile of the operand:
- activations and gradients: 1x128 tiles along the contraction dim (a row's 128 channels);
- weights: 128x128 blocks;
- the Wgrad operands (contracted over tokens): 128x1 tiles, i.e. 128 tokens of a channel;
  the paper re-tiles the cached 1x128 activations this way in the backward pass.
The scale is online: amax(|tile|) / 448, so the tile's largest value maps onto 448 (an
all-zero tile gets scale 1). Values are saturated at +-448 before the cast, because
float8_e4m3fn has no infinity and an overflow would become NaN.

`quantize` returns the E4M3 values (the float8_e4m3fn dtype, 1 byte each: what the
backward pass keeps) and the scales; `dequantize` gives back their product. Dims that are
not a multiple of the tile are padded with zeros, which change no tile's amax.

`FP8MixedPrecision` is the dtype policy that turns the recipe on: BF16 compute and FP32
master weights like mixed_bfloat16, and the linear layers it names (model/linear.py, the
routed experts) run their GEMMs on FP8 operands.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.variables import AutocastScope

E4M3_MAX = 448.0
INVERSE_E4M3_MAX = np.float32(1 / E4M3_MAX)
TILE = 128
ACTIVATION_TILE = (1, TILE)     # Fprop/Dgrad inputs: per token, 128 channels
WEIGHT_BLOCK = (TILE, TILE)
WGRAD_TILE = (TILE, 1)          # Wgrad inputs: per channel, 128 tokens


@dataclasses.dataclass(frozen=True)
class Quantized:
    """E4M3 values padded to whole tiles [..., R/tr, tr, C/tc, tc] and their float32 scales
    [..., R/tr, 1, C/tc, 1]; `shape` is the last two dims before padding."""
    values: object
    scales: object
    shape: tuple


def _pad_to_tiles(x, tile):
    """Zero rows/columns up to whole tiles (a dynamic row count, as in TF graphs, is
    padded by a computed amount)."""
    pad = [(0, 0)] * (len(x.shape) - 2)
    for size, step in zip(ops.shape(x)[-2:], tile):
        pad.append((0, (-size) % step) if step > 1 else (0, 0))
    static = all(isinstance(p[1], int) for p in pad)
    return x if static and not any(p[1] for p in pad) else ops.pad(x, pad)


def quantize(x, tile=ACTIVATION_TILE) -> Quantized:
    """x [..., R, C] (any float dtype) -> E4M3 values and per-tile scales over its last two
    dims, tile = (rows, cols) of one scale."""
    rows, cols = ops.shape(x)[-2], ops.shape(x)[-1]
    padded = _pad_to_tiles(ops.cast(x, "float32"), tile)
    lead = tuple(ops.shape(x)[:-2])
    tiles = ops.reshape(padded, (*lead, -1, tile[0], (cols + tile[1] - 1) // tile[1], tile[1]))
    # amax x float32(1/448), the product XLA makes of "amax / 448" anyway: spelt out, so
    # every backend (and the tests' numpy reference) rounds the scale the same way
    scales = ops.max(ops.abs(tiles), axis=(-3, -1), keepdims=True) * INVERSE_E4M3_MAX
    scales = ops.where(scales > 0, scales, ops.ones_like(scales))   # all-zero tile (or an underflow)
    return Quantized(to_e4m3(tiles / scales), scales, (rows, cols))


def to_e4m3(x):
    """Round to float8_e4m3fn (to nearest even), saturating at +-448: a plain cast turns
    anything past 464 into NaN, E4M3 having no infinity."""
    return ops.cast(ops.clip(x, -E4M3_MAX, E4M3_MAX), "float8_e4m3fn")


def dequantize(q: Quantized, dtype="float32"):
    """-> [..., R, C] in `dtype`: each E4M3 value times its tile's scale (in float32)."""
    product = ops.cast(q.values, "float32") * q.scales
    shape = ops.shape(product)
    padded = ops.reshape(product, (*shape[:-4], shape[-4] * shape[-3], shape[-2] * shape[-1]))
    rows, cols = q.shape
    return ops.cast(padded[..., :rows, :cols], dtype)


def fake_quantize(x, tile=ACTIVATION_TILE, dtype=None):
    """x rounded to the FP8 grid of its tiles (quantize then dequantize), in `dtype` (x's)."""
    return dequantize(quantize(x, tile), dtype or x.dtype)


class FP8MixedPrecision(keras.DTypePolicy):
    """mixed_bfloat16 plus the FP8 recipe for the linear layers; passed as a model's dtype
    (`DeepSeekV3CausalLM(cfg, dtype=FP8MixedPrecision())`), it reaches every sublayer
    through their dtype=self.dtype_policy like any policy."""

    def __init__(self, name: str = "fp8_mixed_bfloat16"):
        super().__init__(name)

    def _parse_name(self, name):
        return "bfloat16", "float32"


def uses_fp8(layer: keras.layers.Layer) -> bool:
    return isinstance(layer.dtype_policy, FP8MixedPrecision)


def master_weight(variable):
    """The FP32 master value of a weight, not its BF16 autocast (FP8 rounds from FP32 once),
    as a tensor rather than the variable (tf.custom_gradient takes tensors)."""
    with AutocastScope(None):
        return ops.cast(variable.value, "float32")


def dtype_policy(precision: str):
    """A training config's `precision` (float32 | bf16 | fp8) -> the model's dtype policy."""
    if precision == "fp8":
        return FP8MixedPrecision()
    return {"float32": "float32", "bf16": "mixed_bfloat16"}[precision]
