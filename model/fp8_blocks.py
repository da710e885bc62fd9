"""Block-scaled FP8 weights as stored in DeepSeek-V3's hub checkpoint.

A float8_e4m3 weight W [out, in] comes with `weight_scale_inv` S of shape
[ceil(out / 128), ceil(in / 128)] (float32); the real weight is W * S, blockwise:
W[i, j] * S[i // 128, j // 128] (DeepSeek-V3 inference/kernel.py `weight_dequant`;
the paper's §3.3.2 128x128 weight blocks). The quantizer is the inverse, as the hub's
`weight_quant`: S = amax(|block|) / 448 (E4M3's largest finite value), a block cut short
at the edge scaled by its own amax (the hub zero-pads it, which changes nothing).

Which tensors the hub stores in FP8 (`stored_in_fp8`): the Linear weights of every
decoder layer, the MTP layer's included (attention projections, dense MLP, routed and
shared experts). Everything else stays bfloat16: embeddings, lm_head and the MTP
shared_head.head, every norm, the router's gate.weight (its e_score_correction_bias is
float32), and the MTP layer's eh_proj (DeepSeek's bf16_cast_fp8.py skips it, and vLLM's
DeepSeekMultiTokenPredictorLayer loads it as a plain bf16 nn.Linear).
"""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np

FP8_E4M3_MAX = 448.0
DEFAULT_BLOCK = (128, 128)
SCALE_SUFFIX = "_scale_inv"    # "<name>.weight_scale_inv" beside "<name>.weight"
# config.json's quantization_config, as the hub checkpoint writes it
QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                       "weight_block_size": list(DEFAULT_BLOCK)}

_FP8_WEIGHT = re.compile(
    r"^model\.layers\.\d+\."
    r"(self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(experts\.\d+\.|shared_experts\.)?(gate_proj|up_proj|down_proj))\.weight$")


def stored_in_fp8(name: str) -> bool:
    """Whether the hub checkpoint stores this hub-layout tensor in FP8."""
    return _FP8_WEIGHT.match(name) is not None


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
    """W [out, in] float -> (float8_e4m3fn W/S, float32 S) with one scale per block.
    One row block at a time, vectorised over its column blocks (V3 has ~45k expert
    matrices of 896 blocks each: a Python loop per block would take hours)."""
    out_dim, in_dim = weight.shape
    rows, cols = scale_shape(weight.shape, block)
    scale = np.empty((rows, cols), np.float32)
    quantized = np.empty(weight.shape, ml_dtypes.float8_e4m3fn)
    padded = np.zeros((block[0], cols * block[1]), np.float32)  # zeros do not change a block's amax
    for i in range(rows):
        row_block = np.asarray(weight[i * block[0]:(i + 1) * block[0]], np.float32)
        height = row_block.shape[0]
        padded[:height, :in_dim] = row_block
        blocks = padded[:height].reshape(height, cols, block[1])
        amax = np.abs(blocks).max(axis=(0, 2))
        scale[i] = np.where(amax > 0, amax / np.float32(FP8_E4M3_MAX), np.float32(1))  # all-zero block: 1
        scaled = (blocks / scale[i][:, None]).reshape(height, cols * block[1])[:, :in_dim]
        quantized[i * block[0]:i * block[0] + height] = scaled.astype(ml_dtypes.float8_e4m3fn)
    return quantized, scale
