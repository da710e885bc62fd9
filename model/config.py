"""The model's configuration: Hugging Face DeepseekV3Config field names, presets, and
parameter counts computed from the config alone (nothing is allocated).

This module imports only the standard library, so `seekforge model info v3-671b` is
instant and the 671B preset can be counted and shape-checked anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

# Keys of a Hugging Face config.json that carry no meaning for the model's math here
# (bookkeeping, serving options, quantisation metadata handled by model/convert.py).
_HF_IGNORED_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype",
    "dtype", "use_cache", "pad_token_id", "quantization_config", "ep_size",
    "moe_layer_freq", "pretraining_tp", "attention_dropout", "aux_loss_alpha", "seq_aux",
    "output_router_logits", "router_aux_loss_coef", "rope_interleave", "head_dim",
    "num_key_value_heads", "_name_or_path", "mlp_bias", "id2label", "label2id",
    "qk_head_dim",  # derived (nope + rope); transformers 5 writes it into config.json
})

# Keys that change the math: accepted only with the value DeepSeek-V3 uses.
_HF_FIXED_VALUES = {
    "hidden_act": "silu",
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "attention_bias": False,
}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-V3 architecture hyperparameters, named as in transformers' DeepseekV3Config."""

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432          # dense SwiGLU MLP of the first layers
    moe_intermediate_size: int = 2048       # each routed / shared expert
    num_hidden_layers: int = 61
    first_k_dense_replace: int = 3          # layers [0, k) dense, the rest MoE
    num_attention_heads: int = 128
    q_lora_rank: int | None = 1536          # None: plain q_proj
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Mapping[str, Any] | None = None
    max_position_embeddings: int = 163840
    num_nextn_predict_layers: int = 1       # MTP depth D
    tie_word_embeddings: bool = False
    initializer_range: float = 0.006        # V3 paper §4.2
    bos_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self):
        if self.q_lora_rank == 0:  # the official code spells "no q LoRA" as 0, HF as None
            object.__setattr__(self, "q_lora_rank", None)
        if self.rope_scaling is not None:
            object.__setattr__(self, "rope_scaling", _normalise_rope_scaling(self.rope_scaling))
        self.validate()

    # ---------------------------------------------------------------- derived shapes
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_moe_layers(self) -> int:
        return self.num_hidden_layers - self.first_k_dense_replace

    def is_moe_layer(self, layer_index: int) -> bool:
        # MTP layers sit at indices >= num_hidden_layers and are MoE like the deep layers.
        return layer_index >= self.first_k_dense_replace

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        positive = ["vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                    "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
                    "num_experts_per_tok", "n_group", "topk_group", "max_position_embeddings"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ["first_k_dense_replace", "n_shared_experts", "num_nextn_predict_layers"]:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank < 0):
            raise ConfigError(f"q_lora_rank must be a positive integer or None, got {self.q_lora_rank!r}")
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        if self.first_k_dense_replace > self.num_hidden_layers:
            raise ConfigError(f"first_k_dense_replace ({self.first_k_dense_replace}) exceeds "
                              f"num_hidden_layers ({self.num_hidden_layers})")
        if self.n_routed_experts % self.n_group:
            raise ConfigError(f"n_routed_experts ({self.n_routed_experts}) is not divisible by "
                              f"n_group ({self.n_group})")
        if self.topk_group > self.n_group:
            raise ConfigError(f"topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
        experts_per_group = self.n_routed_experts // self.n_group
        if self.n_group > 1 and experts_per_group < 2:
            raise ConfigError(f"n_group ({self.n_group}) leaves fewer than 2 experts per group; "
                              "groups are scored by their top-2 experts")
        if self.num_experts_per_tok > self.topk_group * experts_per_group:
            raise ConfigError(f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds the "
                              f"{self.topk_group * experts_per_group} experts in topk_group groups")
        if self.routed_scaling_factor <= 0:
            raise ConfigError(f"routed_scaling_factor must be positive, got {self.routed_scaling_factor}")
        if self.rms_norm_eps <= 0:
            raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps}")
        if self.rope_theta <= 1:
            raise ConfigError(f"rope_theta must be > 1, got {self.rope_theta}")
        for name in ["bos_token_id", "eos_token_id"]:
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name} ({value}) is outside the vocabulary [0, {self.vocab_size})")

    # ---------------------------------------------------------------- presets and HF
    @classmethod
    def from_preset(cls, name: str) -> "ModelConfig":
        try:
            fields = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return cls(**fields)

    @classmethod
    def from_hf(cls, source: Mapping[str, Any] | str | os.PathLike) -> "ModelConfig":
        """Build from a Hugging Face config: a dict, a config.json path, or its directory."""
        where = "config"
        if not isinstance(source, Mapping):
            path = os.fspath(source)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            where = path
            try:
                with open(path, encoding="utf-8") as f:
                    source = json.load(f)
            except FileNotFoundError:
                raise ConfigError(f"{path}: no such file") from None
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from None
        hf = dict(source)
        model_type = hf.get("model_type", "deepseek_v3")
        if model_type != "deepseek_v3":
            raise ConfigError(f"{where}: model_type is {model_type!r}, expected 'deepseek_v3'")
        for key, expected in _HF_FIXED_VALUES.items():
            if key in hf and hf[key] != expected:
                raise ConfigError(f"{where}: {key}={hf[key]!r} is not supported (DeepSeek-V3 uses {expected!r})")
        rope = hf.pop("rope_parameters", None)  # transformers 5 spelling
        if rope is not None:
            hf.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
            if rope.get("rope_type", rope.get("type", "default")) != "default":
                hf.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(hf) - names - _HF_IGNORED_KEYS - set(_HF_FIXED_VALUES)
        if unknown:
            raise ConfigError(f"{where}: unknown config keys {sorted(unknown)}")
        try:
            return cls(**{k: v for k, v in hf.items() if k in names})
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def to_hf(self) -> dict[str, Any]:
        """A config.json dict that transformers' DeepseekV3Config accepts."""
        hf = dataclasses.asdict(self)
        hf["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
        hf.update(_HF_FIXED_VALUES)
        hf.update(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"],
                  rope_interleave=True, num_key_value_heads=self.num_attention_heads)
        return hf

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _normalise_rope_scaling(scaling: Mapping[str, Any]) -> dict[str, Any]:
    scaling = dict(scaling)
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None)
    scaling.pop("type", None)
    if kind != "yarn":
        raise ConfigError(f"rope_scaling type {kind!r} is not supported; DeepSeek-V3 uses 'yarn'")
    defaults = {"factor": 1.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
                "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.0}
    unknown = set(scaling) - set(defaults)
    if unknown:
        raise ConfigError(f"rope_scaling has unknown keys {sorted(unknown)}")
    out = {"type": "yarn", **defaults, **scaling}
    if out["factor"] < 1:
        raise ConfigError(f"rope_scaling.factor must be >= 1, got {out['factor']}")
    if out["beta_fast"] <= out["beta_slow"]:
        raise ConfigError(f"rope_scaling.beta_fast ({out['beta_fast']}) must exceed beta_slow ({out['beta_slow']})")
    return out


def yarn_scaling(factor: float, original_max_position_embeddings: int = 4096) -> dict[str, Any]:
    """DeepSeek-V3's YaRN settings (config_671B.json) for a given extension factor."""
    return {"type": "yarn", "factor": float(factor),
            "original_max_position_embeddings": original_max_position_embeddings,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}


# The official 671B config (deepseek-ai/DeepSeek-V3 configs/config_671B.json and the hub's
# config.json); tiny and small keep its shape rules at CPU and one-GPU scale.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=8192, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
        num_hidden_layers=4, first_k_dense_replace=1, num_attention_heads=4,
        q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, max_position_embeddings=4096,
        num_nextn_predict_layers=1, initializer_range=0.02),
    # the distillation student of `tiny`: same vocabulary (the tokenizer is the teacher's),
    # half the width, half the depth, half the experts
    "tiny-student": dict(
        vocab_size=8192, hidden_size=128, intermediate_size=384, moe_intermediate_size=64,
        num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2,
        q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16,
        v_head_dim=32, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, max_position_embeddings=4096,
        num_nextn_predict_layers=1, initializer_range=0.02),
    "small": dict(
        vocab_size=32768, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
        num_hidden_layers=10, first_k_dense_replace=1, num_attention_heads=16,
        q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32,
        v_head_dim=64, n_routed_experts=64, n_shared_experts=1, num_experts_per_tok=6,
        n_group=8, topk_group=4, routed_scaling_factor=2.5, max_position_embeddings=32768,
        num_nextn_predict_layers=1, initializer_range=0.006),
    "v3-671b": dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, first_k_dense_replace=3, num_attention_heads=128,
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8,
        n_group=8, topk_group=4, routed_scaling_factor=2.5, norm_topk_prob=True,
        rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=yarn_scaling(40, 4096),
        max_position_embeddings=163840, num_nextn_predict_layers=1, initializer_range=0.006),
}


# -------------------------------------------------------------------- weight layout
def _linear(out_features: int, in_features: int) -> tuple[int, int]:
    return (out_features, in_features)  # PyTorch Linear layout, as in the HF checkpoint


def decoder_layer_shapes(cfg: ModelConfig, index: int) -> dict[str, tuple[int, ...]]:
    """HF names (relative to model.layers.{index}) and shapes of one decoder block."""
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    shapes: dict[str, tuple[int, ...]] = {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
    }
    att = "self_attn."
    if cfg.q_lora_rank is None:
        shapes[att + "q_proj.weight"] = _linear(heads * cfg.qk_head_dim, h)
    else:
        shapes[att + "q_a_proj.weight"] = _linear(cfg.q_lora_rank, h)
        shapes[att + "q_a_layernorm.weight"] = (cfg.q_lora_rank,)
        shapes[att + "q_b_proj.weight"] = _linear(heads * cfg.qk_head_dim, cfg.q_lora_rank)
    shapes[att + "kv_a_proj_with_mqa.weight"] = _linear(cfg.kv_lora_rank + cfg.qk_rope_head_dim, h)
    shapes[att + "kv_a_layernorm.weight"] = (cfg.kv_lora_rank,)
    shapes[att + "kv_b_proj.weight"] = _linear(heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank)
    shapes[att + "o_proj.weight"] = _linear(h, heads * cfg.v_head_dim)
    if cfg.is_moe_layer(index):
        i = cfg.moe_intermediate_size
        shapes["mlp.gate.weight"] = (cfg.n_routed_experts, h)
        shapes["mlp.gate.e_score_correction_bias"] = (cfg.n_routed_experts,)
        for e in range(cfg.n_routed_experts):
            shapes.update(_swiglu_shapes(f"mlp.experts.{e}.", h, i))
        if cfg.n_shared_experts:
            shapes.update(_swiglu_shapes("mlp.shared_experts.", h, i * cfg.n_shared_experts))
    else:
        shapes.update(_swiglu_shapes("mlp.", h, cfg.intermediate_size))
    return shapes


def _swiglu_shapes(prefix: str, hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    return {prefix + "gate_proj.weight": _linear(intermediate, hidden),
            prefix + "up_proj.weight": _linear(intermediate, hidden),
            prefix + "down_proj.weight": _linear(hidden, intermediate)}


def mtp_layer_shapes(cfg: ModelConfig, depth: int, with_shared_copies: bool = True) -> dict[str, tuple[int, ...]]:
    """One MTP module, named as in the hub checkpoint (model.layers.{L + depth}.*).

    The hub stores copies of the embedding and output head inside every MTP layer; they
    are the main model's tensors (V3 paper §2.2), so `with_shared_copies=False` counts
    only the module's own parameters.
    """
    h = cfg.hidden_size
    shapes = {"enorm.weight": (h,), "hnorm.weight": (h,), "eh_proj.weight": _linear(h, 2 * h),
              "shared_head.norm.weight": (h,)}
    shapes.update(decoder_layer_shapes(cfg, cfg.num_hidden_layers + depth))
    if with_shared_copies:
        shapes["embed_tokens.weight"] = (cfg.vocab_size, h)
        shapes["shared_head.head.weight"] = (cfg.vocab_size, h)
    return shapes


def hf_weight_shapes(cfg: ModelConfig, include_mtp: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor of the HF checkpoint (hub layout), name -> shape, from the config alone."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden_size)}
    for index in range(cfg.num_hidden_layers):
        prefix = f"model.layers.{index}."
        shapes.update({prefix + k: v for k, v in decoder_layer_shapes(cfg, index).items()})
    shapes["model.norm.weight"] = (cfg.hidden_size,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, cfg.hidden_size)
    if include_mtp:
        for depth in range(cfg.num_nextn_predict_layers):
            prefix = f"model.layers.{cfg.num_hidden_layers + depth}."
            shapes.update({prefix + k: v for k, v in mtp_layer_shapes(cfg, depth).items()})
    return shapes


_ROUTER_BIAS = "e_score_correction_bias"


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from the config alone.

    total:     the main model's trainable parameters (embedding, decoder layers, final norm,
               head; MTP excluded), as transformers' DeepseekV3ForCausalLM counts them:
               671,026,404,352 for v3-671b. The router's e_score_correction_bias is a
               non-trainable buffer there and here, so it is not counted.
    activated: parameters touched by one token: total minus the routed experts it skips.
    mtp:       the MTP modules' own parameters (embedding and head are shared, not counted).
    """
    def trainable(shapes):
        return sum(math.prod(s) for name, s in shapes.items() if not name.endswith(_ROUTER_BIAS))

    total = trainable(hf_weight_shapes(cfg, include_mtp=False))
    per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    skipped = (cfg.n_routed_experts - cfg.num_experts_per_tok) * per_expert * cfg.num_moe_layers
    mtp = sum(trainable(mtp_layer_shapes(cfg, d, with_shared_copies=False))
              for d in range(cfg.num_nextn_predict_layers))
    return {"total": total, "activated": total - skipped, "mtp": mtp}


def kv_cache_values_per_token(cfg: ModelConfig) -> dict[str, int]:
    """Cached values per token per layer: MLA's absorbed cache vs a standard MHA cache
    with the same heads (full K of qk_head_dim and V of v_head_dim for every head)."""
    mla = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    mha = cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    return {"mla": mla, "mha": mha, "reduction": 1.0 - mla / mha}
