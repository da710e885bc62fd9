"""Which Keras variable holds each tensor of the Hugging Face DeepSeek-V3 checkpoint.

The hub layout (config.hf_weight_shapes) names every tensor; each maps to one of:
- a whole variable, as is (norms, embedding, router weight and bias);
- a whole variable, transposed (PyTorch Linear [out, in] vs Keras Dense kernel [in, out]);
- one expert's slice of a stacked expert variable, transposed
  (experts.E.gate_proj.weight [I, H] -> RoutedExperts.gate_proj[E] [H, I]);
- nothing: the MTP layer's embed_tokens and shared_head.head are copies of the main
  model's embedding and head, which seekforge shares (V3 paper §2.2).

transformers keeps experts fused in memory (experts.gate_up_proj [E, 2I, H], gate rows
first, and experts.down_proj [E, H, I]); `split_fused_experts` turns those into the
per-expert hub names, so the loader handles one layout.
"""

from __future__ import annotations

import dataclasses
import re

import keras

_FUSED = re.compile(r"^(?P<prefix>.*\.mlp\.experts)\.(?P<kind>gate_up_proj|down_proj)$")


@dataclasses.dataclass(frozen=True)
class Target:
    variable: keras.Variable | None   # None: a copy of shared_with
    transpose: bool = False
    expert: int | None = None         # index into a stacked [E, ...] variable
    shared_with: str | None = None    # hub name of the tensor this one copies


def _linear(dense) -> Target:
    return Target(dense.kernel, transpose=True)


def _norm(norm) -> Target:
    return Target(norm.weight)


def _swiglu(prefix: str, mlp) -> dict[str, Target]:
    return {f"{prefix}{name}.weight": _linear(getattr(mlp, name)) for name in ("gate_proj", "up_proj", "down_proj")}


def _decoder_layer(prefix: str, layer) -> dict[str, Target]:
    attn = layer.self_attn
    out = {prefix + "input_layernorm.weight": _norm(layer.input_layernorm),
           prefix + "post_attention_layernorm.weight": _norm(layer.post_attention_layernorm)}
    a = prefix + "self_attn."
    if layer.cfg.q_lora_rank is None:
        out[a + "q_proj.weight"] = _linear(attn.q_proj)
    else:
        out[a + "q_a_proj.weight"] = _linear(attn.q_a_proj)
        out[a + "q_a_layernorm.weight"] = _norm(attn.q_a_layernorm)
        out[a + "q_b_proj.weight"] = _linear(attn.q_b_proj)
    out[a + "kv_a_proj_with_mqa.weight"] = _linear(attn.kv_a_proj_with_mqa)
    out[a + "kv_a_layernorm.weight"] = _norm(attn.kv_a_layernorm)
    out[a + "kv_b_proj.weight"] = _linear(attn.kv_b_proj)
    out[a + "o_proj.weight"] = _linear(attn.o_proj)
    m = prefix + "mlp."
    if not layer.is_moe:
        out.update(_swiglu(m, layer.mlp))
        return out
    moe = layer.mlp
    out[m + "gate.weight"] = Target(moe.gate.weight)                   # [E, H] in both layouts
    out[m + "gate.e_score_correction_bias"] = Target(moe.gate.e_score_correction_bias)
    for e in range(moe.experts.num_experts):
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[f"{m}experts.{e}.{name}.weight"] = Target(getattr(moe.experts, name), transpose=True, expert=e)
    if moe.shared_experts is not None:
        out.update(_swiglu(m + "shared_experts.", moe.shared_experts))
    return out


def hub_targets(model) -> dict[str, Target]:
    """Every hub-layout tensor name of `model` (a DeepSeekV3CausalLM) -> its Target, in
    the order of config.hf_weight_shapes."""
    cfg = model.cfg
    head = "model.embed_tokens.weight" if model.lm_head is None else "lm_head.weight"
    out = {"model.embed_tokens.weight": Target(model.embed_tokens.embeddings)}
    for index, layer in enumerate(model.decoder_layers):
        out.update(_decoder_layer(f"model.layers.{index}.", layer))
    out["model.norm.weight"] = _norm(model.norm)
    if model.lm_head is not None:
        out["lm_head.weight"] = _linear(model.lm_head)
    for depth, mtp in enumerate(model.mtp_layers):
        p = f"model.layers.{cfg.num_hidden_layers + depth}."
        out.update({p + "enorm.weight": _norm(mtp.enorm), p + "hnorm.weight": _norm(mtp.hnorm),
                    p + "eh_proj.weight": _linear(mtp.eh_proj),
                    p + "shared_head.norm.weight": _norm(mtp.shared_head_norm)})
        out.update(_decoder_layer(p, mtp.block))
        out[p + "embed_tokens.weight"] = Target(None, shared_with="model.embed_tokens.weight")
        out[p + "shared_head.head.weight"] = Target(None, shared_with=head)
    return out


def fused_expert_names(name: str, num_experts: int) -> list[str] | None:
    """The per-expert hub names a fused transformers tensor stands for, or None when
    `name` is not a fused expert tensor."""
    match = _FUSED.match(name)
    if match is None:
        return None
    kinds = ("gate_proj", "up_proj") if match["kind"] == "gate_up_proj" else ("down_proj",)
    return [f"{match['prefix']}.{e}.{kind}.weight" for e in range(num_experts) for kind in kinds]


def fused_shape(name: str, hidden: int, intermediate: int, num_experts: int) -> tuple[int, ...]:
    """The shape transformers gives a fused expert tensor."""
    if name.endswith("gate_up_proj"):
        return (num_experts, 2 * intermediate, hidden)
    return (num_experts, hidden, intermediate)


def split_fused_experts(name: str, array):
    """Yield (hub name, [out, in] array view) for each expert of a fused tensor."""
    prefix = name.rsplit(".", 1)[0]
    if name.endswith("gate_up_proj"):
        intermediate = array.shape[1] // 2
        for e in range(array.shape[0]):
            yield f"{prefix}.{e}.gate_proj.weight", array[e, :intermediate]
            yield f"{prefix}.{e}.up_proj.weight", array[e, intermediate:]
    else:
        for e in range(array.shape[0]):
            yield f"{prefix}.{e}.down_proj.weight", array[e]
