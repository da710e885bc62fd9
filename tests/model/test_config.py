"""ModelConfig: presets, HF round trip, validation naming the field, parameter counts."""

import json
import math

import pytest

from model.config import (PRESETS, ConfigError, ModelConfig, count_parameters, hf_weight_shapes,
                          kv_cache_values_per_token)

# transformers' DeepseekV3ForCausalLM on the official config (REFERENCE.md)
V3_TOTAL = 671_026_404_352
V3_ACTIVATED = 37_552_282_624


def test_v3_671b_counts_match_transformers():
    counts = count_parameters(ModelConfig.from_preset("v3-671b"))
    assert counts["total"] == V3_TOTAL
    assert counts["activated"] == V3_ACTIVATED
    # the MTP module's own parameters: ~11.5B in the paper's accounting (REFERENCE.md)
    assert 11.4e9 < counts["mtp"] < 11.7e9


def _independent_count(c: ModelConfig) -> dict:
    """The same counts by closed-form arithmetic, written separately from model.config."""
    h, heads = c.hidden_size, c.num_attention_heads
    q = h * heads * c.qk_head_dim if c.q_lora_rank is None else (
        h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * heads * c.qk_head_dim)
    attention = (q + h * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
                 + c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim) + heads * c.v_head_dim * h)
    norms = 2 * h
    dense = 3 * h * c.intermediate_size
    expert = 3 * h * c.moe_intermediate_size
    moe = c.n_routed_experts * h + (c.n_routed_experts + c.n_shared_experts) * expert
    embed = c.vocab_size * h * (1 if c.tie_word_embeddings else 2)
    total = (embed + h + c.num_hidden_layers * (attention + norms)
             + c.first_k_dense_replace * dense + c.num_moe_layers * moe)
    activated = total - c.num_moe_layers * (c.n_routed_experts - c.num_experts_per_tok) * expert
    mtp = c.num_nextn_predict_layers * (3 * h + 2 * h * h + attention + norms + moe)
    return {"total": total, "activated": activated, "mtp": mtp}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_counts_match_closed_form(preset):
    cfg = ModelConfig.from_preset(preset)
    assert count_parameters(cfg) == _independent_count(cfg)


def test_preset_sizes_are_as_advertised():
    tiny = count_parameters(ModelConfig.from_preset("tiny"))
    small = count_parameters(ModelConfig.from_preset("small"))
    assert 8e6 < tiny["total"] < 12e6
    assert 0.9e9 < small["total"] < 1.2e9


def test_tiny_preset_shape_rules():
    c = ModelConfig.from_preset("tiny")
    assert (c.num_hidden_layers, c.first_k_dense_replace, c.n_routed_experts, c.n_group) == (4, 1, 16, 4)
    assert (c.topk_group, c.num_experts_per_tok, c.n_shared_experts, c.num_nextn_predict_layers) == (2, 4, 1, 1)
    assert c.q_lora_rank and c.q_lora_rank > 0


def test_v3_671b_is_the_official_config():
    c = ModelConfig.from_preset("v3-671b")
    assert c.rope_scaling == {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
                              "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
    assert c.max_position_embeddings == 163840
    assert (c.num_hidden_layers, c.first_k_dense_replace, c.n_routed_experts, c.num_experts_per_tok) == (61, 3, 256, 8)
    assert (c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim) == (1536, 512, 128, 64)


def test_hf_round_trip_through_a_file(tmp_path):
    cfg = ModelConfig.from_preset("v3-671b")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_hf()))
    assert ModelConfig.from_hf(path) == cfg
    assert ModelConfig.from_hf(tmp_path) == cfg  # the directory works too


def test_from_hf_reads_transformers5_rope_parameters():
    hf = ModelConfig.from_preset("tiny").to_hf()
    del hf["rope_scaling"], hf["rope_theta"]
    hf["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 5e4, "factor": 4.0,
                             "original_max_position_embeddings": 256, "beta_fast": 32, "beta_slow": 1,
                             "mscale": 1.0, "mscale_all_dim": 1.0}
    cfg = ModelConfig.from_hf(hf)
    assert cfg.rope_theta == 5e4 and cfg.rope_scaling["factor"] == 4.0
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4}
    assert ModelConfig.from_hf(hf).rope_scaling is None


def test_q_lora_rank_zero_means_plain_q_projection():
    cfg = ModelConfig.from_preset("tiny").replace(q_lora_rank=0)
    assert cfg.q_lora_rank is None
    assert "model.layers.0.self_attn.q_proj.weight" in hf_weight_shapes(cfg)


@pytest.mark.parametrize("changes, field", [
    (dict(n_routed_experts=18), "n_routed_experts"),
    (dict(topk_group=5), "topk_group"),
    (dict(num_experts_per_tok=9, topk_group=2), "num_experts_per_tok"),
    (dict(qk_rope_head_dim=15), "qk_rope_head_dim"),
    (dict(first_k_dense_replace=5), "first_k_dense_replace"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(eos_token_id=10**6), "eos_token_id"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
    (dict(rope_scaling={"type": "yarn", "factor": 4.0, "bogus": 1}), "rope_scaling"),
])
def test_validation_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig.from_preset("tiny").replace(**changes)


def test_from_hf_errors_name_file_and_key(tmp_path):
    hf = ModelConfig.from_preset("tiny").to_hf()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**hf, "scoring_func": "softmax"}))
    with pytest.raises(ConfigError, match=r"config.json: scoring_func"):
        ModelConfig.from_hf(path)
    path.write_text(json.dumps({**hf, "n_group": 3}))
    with pytest.raises(ConfigError, match=r"config.json: n_routed_experts .* n_group"):
        ModelConfig.from_hf(path)
    path.write_text(json.dumps({**hf, "num_experts": 3}))
    with pytest.raises(ConfigError, match=r"unknown config keys \['num_experts'\]"):
        ModelConfig.from_hf(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_hf(path)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        ModelConfig.from_preset("huge")


def test_mla_cache_reduction():
    """MLA caches kv_lora_rank + qk_rope_head_dim values per token per layer (576 for V3);
    against a multi-head cache of the same 128 heads (K 192 + V 128 each) that is 98.6%
    smaller, above the 93.3% the seed quotes (which the V2 paper measured against DeepSeek 67B)."""
    cache = kv_cache_values_per_token(ModelConfig.from_preset("v3-671b"))
    assert cache["mla"] == 576
    assert cache["mha"] == 128 * (192 + 128)
    assert cache["reduction"] >= 0.933
    assert math.isclose(cache["reduction"], 1 - 576 / 40960)
