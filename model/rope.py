"""Rotary position embedding on MLA's decoupled rope dims, with DeepSeek-V3's YaRN.

The frequencies follow `precompute_freqs_cis` of deepseek-ai/DeepSeek-V3 inference/model.py:
correction range by floor/ceil of the correction dim, a linear ramp between them, and a
blend of interpolated (freq / factor) and extrapolated (freq) frequencies. Unlike the
official code, which turns YaRN on only when max_seq_len > original_seq_len, YaRN applies
whenever `rope_scaling` is set, as in transformers; checkpoints converted from HF then
give the same numbers.

Pairs are interleaved, (x[2i], x[2i+1]), as in the official checkpoint's layout.
"""

import math

import numpy as np
from keras import ops

from model.config import ModelConfig


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_correction_range(dim: int, base: float, beta_fast: float, beta_slow: float,
                          original_max_position_embeddings: int) -> tuple[int, int]:
    """Rotary-dim indices between which YaRN blends from extrapolation to interpolation."""
    def correction_dim(rotations: float) -> float:
        return dim * math.log(original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = math.floor(correction_dim(beta_fast))
    high = math.ceil(correction_dim(beta_slow))
    return max(low, 0), min(high, dim - 1)


def rope_inverse_frequencies(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies for the qk_rope_head_dim rotary dims, length qk_rope_head_dim/2."""
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    freqs = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    yarn = cfg.rope_scaling
    if yarn is None:
        return freqs
    low, high = yarn_correction_range(dim, base, yarn["beta_fast"], yarn["beta_slow"],
                                      yarn["original_max_position_embeddings"])
    if low == high:
        high += 0.001  # avoid a zero-width ramp, as the reference does
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return freqs / yarn["factor"] * ramp + freqs * (1.0 - ramp)


def rope_attention_factor(cfg: ModelConfig) -> float:
    """Scale on cos/sin (transformers' YaRN attention_factor); 1.0 for DeepSeek-V3, where
    mscale == mscale_all_dim and the temperature goes into the softmax scale instead."""
    yarn = cfg.rope_scaling
    if yarn is None:
        return 1.0
    if yarn["mscale"] and yarn["mscale_all_dim"]:
        return yarn_mscale(yarn["factor"], yarn["mscale"]) / yarn_mscale(yarn["factor"], yarn["mscale_all_dim"])
    return yarn_mscale(yarn["factor"])


def rope_cos_sin(inverse_frequencies, positions, attention_factor: float = 1.0):
    """cos and sin of positions * inverse frequencies: [..., rope_dim / 2] float32."""
    angles = ops.cast(positions, "float32")[..., None] * ops.cast(inverse_frequencies, "float32")
    return ops.cos(angles) * attention_factor, ops.sin(angles) * attention_factor


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs of x [..., rope_dim] by angles whose cos/sin are
    [..., rope_dim / 2] (broadcastable); computed in float32, returned in x's dtype."""
    shape = ops.shape(x)
    pairs = ops.reshape(ops.cast(x, "float32"), (*shape[:-1], shape[-1] // 2, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = ops.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return ops.cast(ops.reshape(rotated, shape), x.dtype)
