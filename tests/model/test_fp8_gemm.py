"""model/fp8_gemm's block-scaled FP8 GEMM (JAX), through Pallas' interpreter on CPU: the
sum over 128-deep K-blocks of E4M3 products times their tiles' scales, against numpy."""

import keras
import ml_dtypes
import numpy as np
import pytest

from model import fp8
from tests.model import fp8_reference

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="a Pallas kernel: JAX only")


@pytest.fixture(autouse=True)
def interpreted(monkeypatch):
    from model import fp8_gemm
    monkeypatch.setattr(fp8_gemm, "MODE", "interpret")
    return fp8_gemm


def relative_error(ours, want):
    return float(np.linalg.norm(np.asarray(ours, np.float64) - want) / np.linalg.norm(want))


@pytest.mark.parametrize("rows, depth, cols", [(200, 384, 160), (128, 128, 128), (7, 300, 130)])
def test_activation_times_weight_blocks(interpreted, rows, depth, cols):
    """A in 1x128 tiles times B in 128x128 blocks (Fprop's operands); odd sizes are padded."""
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, depth)).astype(np.float32) * 3
    b = (rng.standard_normal((depth, cols)) * 0.05).astype(np.float32)
    out = interpreted.scaled_matmul(*interpreted.operands(fp8.quantize(a, fp8.ACTIVATION_TILE)),
                                    *interpreted.operands(fp8.quantize(b, fp8.WEIGHT_BLOCK)),
                                    out_dtype="float32")
    out = np.asarray(out)[:rows, :cols]
    want = fp8_reference.fake_quantize(a, (1, 128)).astype(np.float64) @ fp8_reference.fake_quantize(b, (128, 128))
    assert relative_error(out, want) < 1e-6   # FP32 accumulation of exactly rounded operands


def test_transposed_operands_give_dgrad_and_wgrad(interpreted):
    """dy W^T (W's blocks transposed) and x^T dy in 128x1 tiles, as model/linear.py asks."""
    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((260, 192)).astype(np.float32), rng.standard_normal((260, 150)).astype(np.float32)
    w = (rng.standard_normal((192, 150)) * 0.05).astype(np.float32)
    dx = interpreted.scaled_matmul(*interpreted.operands(fp8.quantize(dy, fp8.ACTIVATION_TILE)),
                                   *interpreted.operands(fp8.quantize(w, fp8.WEIGHT_BLOCK), transpose=True),
                                   out_dtype="float32")
    dw = interpreted.scaled_matmul(*interpreted.operands(fp8.quantize(x, fp8.WGRAD_TILE), transpose=True),
                                   *interpreted.operands(fp8.quantize(dy, fp8.WGRAD_TILE)), out_dtype="float32")
    q = fp8_reference.fake_quantize
    assert relative_error(np.asarray(dx)[:, :192], q(dy, (1, 128)).astype(np.float64) @ q(w, (128, 128)).T) < 1e-6
    assert relative_error(dw, q(x, (128, 1)).astype(np.float64).T @ q(dy, (128, 1))) < 1e-6


def test_the_scales_are_applied_per_k_block_in_fp32(interpreted):
    """Two K-blocks of very different magnitude: one shared scale would round the small
    block's values to zero; per-block scales keep both exactly (E4M3 values)."""
    a = np.concatenate([np.full((128, 128), 1000.0), np.full((128, 128), 1e-3)], axis=1).astype(np.float32)
    b = np.ones((256, 128), np.float32)
    out = interpreted.scaled_matmul(*interpreted.operands(fp8.quantize(a, fp8.ACTIVATION_TILE)),
                                    *interpreted.operands(fp8.quantize(b, fp8.WEIGHT_BLOCK)), out_dtype="float32")
    np.testing.assert_allclose(np.asarray(out), 128 * (1000.0 + 1e-3), rtol=1e-6)
    assert ml_dtypes.float8_e4m3fn(1e-3 * 448 / 1000) == 0   # what a per-tensor scale would do


def test_mismatched_scales_are_an_error_naming_the_shapes(interpreted):
    a = fp8.quantize(np.ones((4, 256), np.float32), fp8.ACTIVATION_TILE)
    values, scales = interpreted.operands(a)
    with pytest.raises(ValueError, match=r"K must be a multiple of 128"):
        interpreted.scaled_matmul(values, scales[:, :1], values.T, np.ones((2, 4), np.float32))
