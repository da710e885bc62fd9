"""YaRN frequencies and softmax scale against a transcription of DeepSeek-V3's reference
(inference/model.py: precompute_freqs_cis and MLA.softmax_scale), and the interleaved
rotation against complex multiplication, as the official apply_rotary_emb computes it."""

import math

import numpy as np
import pytest
from keras import ops

from model.attention import softmax_scale
from model.config import ModelConfig
from model.rope import apply_rope, rope_attention_factor, rope_cos_sin, rope_inverse_frequencies


def reference_freqs(dim, base, factor, beta_fast, beta_slow, original_seq_len):
    """The reference formula, step by step, in float64."""
    def find_correction_dim(num_rotations):
        return dim * math.log(original_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(find_correction_dim(beta_fast)), 0)
    high = min(math.ceil(find_correction_dim(beta_slow)), dim - 1)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if low == high:
        high += 0.001
    linear = (np.arange(dim // 2, dtype=np.float64) - low) / (high - low)
    smooth = 1 - np.clip(linear, 0, 1)
    return freqs / factor * (1 - smooth) + freqs * smooth, (low, high)


def test_v3_yarn_frequencies_match_reference():
    cfg = ModelConfig.from_preset("v3-671b")
    expected, (low, high) = reference_freqs(64, 10000.0, 40.0, 32, 1, 4096)
    assert (low, high) == (10, 23)  # REFERENCE.md
    ours = rope_inverse_frequencies(cfg)
    assert ours.shape == (32,)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    # below the ramp: extrapolated (unchanged); above: interpolated by 1/40
    base = 1.0 / 10000.0 ** (np.arange(0, 64, 2) / 64)
    np.testing.assert_allclose(ours[:10], base[:10], rtol=1e-12)
    np.testing.assert_allclose(ours[23:], base[23:] / 40, rtol=1e-12)


@pytest.mark.parametrize("factor, original, beta_fast, beta_slow", [(4.0, 256, 32, 1), (16.0, 1024, 16, 2)])
def test_small_yarn_settings_match_reference(factor, original, beta_fast, beta_slow):
    scaling = {"type": "yarn", "factor": factor, "original_max_position_embeddings": original,
               "beta_fast": beta_fast, "beta_slow": beta_slow, "mscale": 1.0, "mscale_all_dim": 1.0}
    cfg = ModelConfig.from_preset("tiny").replace(rope_scaling=scaling)
    expected, _ = reference_freqs(cfg.qk_rope_head_dim, cfg.rope_theta, factor, beta_fast, beta_slow, original)
    np.testing.assert_allclose(rope_inverse_frequencies(cfg), expected, rtol=1e-12)


def test_plain_rope_without_scaling():
    cfg = ModelConfig.from_preset("tiny")
    dim = cfg.qk_rope_head_dim
    np.testing.assert_allclose(rope_inverse_frequencies(cfg), 10000.0 ** (-np.arange(0, dim, 2) / dim))
    assert rope_attention_factor(cfg) == 1.0
    assert softmax_scale(cfg) == pytest.approx(cfg.qk_head_dim ** -0.5)


def test_v3_softmax_scale():
    """192**-0.5 * (0.1 * 1 * ln 40 + 1)**2 = 0.1352338 (REFERENCE.md)."""
    cfg = ModelConfig.from_preset("v3-671b")
    mscale = 0.1 * 1.0 * math.log(40.0) + 1.0
    assert softmax_scale(cfg) == pytest.approx(192 ** -0.5 * mscale ** 2, rel=1e-12)
    assert softmax_scale(cfg) == pytest.approx(0.1352338, abs=5e-8)
    assert rope_attention_factor(cfg) == 1.0  # mscale == mscale_all_dim: no cos/sin scaling


def test_interleaved_rotation_is_complex_multiplication():
    rng = np.random.default_rng(0)
    cfg = ModelConfig.from_preset("v3-671b")
    x = rng.standard_normal((2, 5, 3, 64)).astype(np.float32)  # [b, s, heads, rope_dim]
    positions = np.array([[0, 1, 2, 3, 4], [7, 100, 1000, 4095, 160000]])
    inv = rope_inverse_frequencies(cfg).astype(np.float32)
    cos, sin = rope_cos_sin(inv, positions)
    ours = ops.convert_to_numpy(apply_rope(x, cos[:, :, None, :], sin[:, :, None, :]))
    pairs = x[..., 0::2] + 1j * x[..., 1::2]
    # float32 angles, as the reference's torch.outer(arange(seqlen), freqs) computes them
    angles = (positions[..., None].astype(np.float32) * inv).astype(np.float64)
    rotated = pairs * np.exp(1j * angles)[:, :, None, :]
    expected = np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
