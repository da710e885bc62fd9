"""The GPU benchmark's CPU-side parts: the small preset's config as transformers reads it,
the FLOPs behind its MFU, and the summary it prints from a results dict (no GPU, no
timings asserted)."""

import importlib.util
import os

import pytest

from model.config import ModelConfig
from model.flops import model_flops_utilisation, training_flops_per_token

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_small", os.path.join(ROOT, "benchmarks", "bench_gpu_small.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_config_maps_onto_transformers():
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig.from_preset("small")
    hf = transformers.DeepseekV3Config(**cfg.to_hf())
    for field in ("vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers", "first_k_dense_replace",
                  "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                  "v_head_dim", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group",
                  "topk_group", "routed_scaling_factor", "norm_topk_prob"):
        assert getattr(hf, field) == getattr(cfg, field), field
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg


def test_small_training_flops_and_mfu():
    cfg = ModelConfig.from_preset("small")
    with_mtp, main = training_flops_per_token(cfg, 4096), training_flops_per_token(cfg, 4096, mtp=False)
    assert 1.3e9 < main < with_mtp < 1.7e9          # ~0.22B activated matrix weights x 6, + attention
    # MFU is FLOPs/token x tokens/s over the peak: 100k tokens/s at 1.666 GFLOP/token is 22% of 750 TFLOP/s
    assert model_flops_utilisation(cfg, 4096, 1e5, 750e12) == pytest.approx(with_mtp * 1e5 / 750e12)


def test_summary_reports_ratios_and_mfu():
    bench = load_bench()
    s = bench.settings(quick=False)
    results = {
        "parity_ours": {"lm_loss_float32": 10.5, "lm_loss_bf16": 10.51},
        "parity_theirs": {"lm_loss_float32": 10.5, "lm_loss_bf16": 10.52},
        "experts": {"best": "capacity", "rows": 6, "tokens": 1, "designs": {
            "capacity": dict(forward_ms=1.0, forward_backward_ms=3.0, forward_tflops=300.0,
                             forward_backward_tflops=300.0, rel_err_out=0.0, rel_err_grads=1e-3),
            "ragged_dot": {"error": "ValueError: no"}}},
        "train_ours": dict(batch=8, seq=4096, step_s=0.5, tokens_per_s=65536.0, mfu=0.15, mfu_main_model_only=0.12,
                           first_loss=11.0, last_loss=10.0),
        "train_theirs_eager": dict(batch=8, step_s=1.0, tokens_per_s=32768.0, compiled=False,
                                   experts_implementation="grouped_mm", attn_implementation="sdpa"),
        "decode_ours": {"batch_1": {"tokens_per_s": 300.0, "first_tokens": [[1, 2]]}, "cache_bytes_per_token": 5760,
                        "cache_values_per_token_per_layer": 288},
        "decode_theirs": {"batch_1": {"tokens_per_s": 100.0, "first_tokens": [[1, 3]]}},
    }
    text = "\n".join(bench.summarise(results, s))
    assert "ratio ours/theirs 2.00" in text
    assert "MFU 15.0%" in text
    assert "decode batch   1" in text and "ratio 3.00" in text and "agree 1/2" in text
    assert "ragged_dot" in text and "ERROR" in text
    assert "fastest correct design = capacity" in text
