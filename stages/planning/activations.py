"""Activation bytes a micro-batch leaves behind in one pipeline stage for its backward
pass, derived from the layer shapes.

Per token and per decoder layer, the tensors the backward pass reads (training path of
MLA: per-head q/k/v through a fused flash attention, which keeps the output and the
softmax log-sum-exp but never the S x S scores):

  tensor (values per token)                                 kind
  layer input x, input of input_layernorm (H)               kept
  RMSNorm 1/rms, per norm (1, FP32)                         stat
  normed x, input of q_a_proj and kv_a_proj (H)             norm_output
  q_a_proj output, input of q_a_layernorm (q_lora_rank)     kept
  q_a_layernorm output, input of q_b_proj (q_lora_rank)     norm_output
  latent, input of kv_a_layernorm (kv_lora_rank)            kept
  rope key before rotation (qk_rope_head_dim)               kept
  kv_a_layernorm output, input of kv_b_proj (kv_lora_rank)  norm_output
  q, k (heads x qk_head_dim each), v (heads x v_head_dim)   up_projection
  attention output, input of o_proj (heads x v_head_dim)    attention_output
  softmax log-sum-exp (heads, FP32)                         stat
  residual, input of post_attention_layernorm (H)           kept
  normed residual, input of the router / experts / MLP (H)  norm_output
MoE layers:
  router scores, sigmoid outputs (n_routed_experts, FP32)   stat
  top-k indices (int32) and gating weights (FP32) (2K)      stat
  the K dispatched copies of the token (K x H)              linear_input
  gate_proj and up_proj outputs of the K experts (2 K I)    swiglu_input
  SwiGLU outputs, inputs of down_proj (K I)                 swiglu_output
  the K expert outputs before the weighted sum (K x H)      expert_output
  shared experts: the same three for I_shared               swiglu_input/_output
Dense layers: gate/up outputs (2 I_dense) and SwiGLU output (I_dense) of the MLP.
Last stage: final-norm input and output, and the logits (vocab) the cross-entropy's
backward needs, for the main head and each MTP module's head; each MTP module also keeps
its enorm input (the next token's embedding), the [enorm; hnorm] concatenation (2H,
input of eh_proj) and one MoE layer.

Bytes per kind come from the recipe (precision.TrainingPrecision). Recompute "selective"
(V3 §3.3.1-3.3.2) drops norm_output, up_projection and swiglu_output; "full" keeps only
each layer's input and rebuilds one layer at a time during the backward pass (that
layer's activations are then workspace, see memory.py).
"""

from __future__ import annotations

import dataclasses

from model.config import ModelConfig
from stages.planning.layout import Stage
from stages.planning.precision import TrainingPrecision

_DROPPED_BY_SELECTIVE = frozenset({"norm_output", "up_projection", "swiglu_output"})


@dataclasses.dataclass(frozen=True)
class SavedTensor:
    name: str
    values_per_token: int
    kind: str


def _bytes(kind: str, p: TrainingPrecision) -> float:
    return {"kept": p.activation_bytes, "stat": 4.0, "norm_output": p.linear_input_bytes,
            "up_projection": p.activation_bytes, "attention_output": p.attention_output_bytes,
            "linear_input": p.linear_input_bytes, "swiglu_input": p.swiglu_input_bytes,
            "swiglu_output": p.linear_input_bytes, "expert_output": p.activation_bytes}[kind]


def attention_tensors(cfg: ModelConfig) -> list[SavedTensor]:
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    t = [SavedTensor("x", h, "kept"), SavedTensor("input_layernorm.rstd", 1, "stat"),
         SavedTensor("input_layernorm.out", h, "norm_output")]
    if cfg.q_lora_rank is not None:
        t += [SavedTensor("q_a_proj.out", cfg.q_lora_rank, "kept"), SavedTensor("q_a_layernorm.rstd", 1, "stat"),
              SavedTensor("q_a_layernorm.out", cfg.q_lora_rank, "norm_output")]
    t += [SavedTensor("kv_latent", cfg.kv_lora_rank, "kept"), SavedTensor("k_rope", cfg.qk_rope_head_dim, "kept"),
          SavedTensor("kv_a_layernorm.rstd", 1, "stat"), SavedTensor("kv_a_layernorm.out", cfg.kv_lora_rank, "norm_output"),
          SavedTensor("q", heads * cfg.qk_head_dim, "up_projection"),
          SavedTensor("k", heads * cfg.qk_head_dim, "up_projection"),
          SavedTensor("v", heads * cfg.v_head_dim, "up_projection"),
          SavedTensor("attention.out", heads * cfg.v_head_dim, "attention_output"),
          SavedTensor("attention.logsumexp", heads, "stat"),
          SavedTensor("residual", h, "kept"), SavedTensor("post_attention_layernorm.rstd", 1, "stat"),
          SavedTensor("post_attention_layernorm.out", h, "norm_output")]
    return t


def mlp_tensors(cfg: ModelConfig, moe: bool, precision: TrainingPrecision) -> list[SavedTensor]:
    if not moe:
        i = cfg.intermediate_size
        return [SavedTensor("mlp.gate_up.out", 2 * i, "swiglu_input"), SavedTensor("mlp.act.out", i, "swiglu_output")]
    k, h, i = cfg.num_experts_per_tok, cfg.hidden_size, cfg.moe_intermediate_size
    t = [SavedTensor("router.scores", cfg.n_routed_experts, "stat"),
         SavedTensor("router.topk", 2 * k, "stat"),
         SavedTensor("experts.dispatched", k * h, "linear_input"),
         SavedTensor("experts.gate_up.out", 2 * k * i, "swiglu_input"),
         SavedTensor("experts.act.out", k * i, "swiglu_output")]
    if not precision.gate_on_expert_side:
        t.append(SavedTensor("experts.out", k * h, "expert_output"))
    if cfg.n_shared_experts:
        shared = i * cfg.n_shared_experts
        t += [SavedTensor("shared_experts.gate_up.out", 2 * shared, "swiglu_input"),
              SavedTensor("shared_experts.act.out", shared, "swiglu_output")]
    return t


def layer_tensors(cfg: ModelConfig, moe: bool, precision: TrainingPrecision) -> list[SavedTensor]:
    return attention_tensors(cfg) + mlp_tensors(cfg, moe, precision)


def head_tensors(cfg: ModelConfig) -> list[SavedTensor]:
    return [SavedTensor("norm.in", cfg.hidden_size, "kept"), SavedTensor("norm.rstd", 1, "stat"),
            SavedTensor("norm.out", cfg.hidden_size, "norm_output"), SavedTensor("logits", cfg.vocab_size, "kept")]


def mtp_extra_tensors(cfg: ModelConfig) -> list[SavedTensor]:
    """An MTP module's own tensors besides its decoder layer and its head."""
    h = cfg.hidden_size
    return [SavedTensor("enorm.in", h, "kept"), SavedTensor("enorm.rstd", 1, "stat"),
            SavedTensor("hnorm.rstd", 1, "stat"), SavedTensor("eh_proj.in", 2 * h, "norm_output")]


def tensors_bytes(tensors: list[SavedTensor], precision: TrainingPrecision, recompute: str | None = None) -> float:
    """Bytes per token kept by `tensors` under the recipe (or an overriding recompute)."""
    recompute = recompute or precision.recompute
    total = 0.0
    for t in tensors:
        if recompute == "selective" and t.kind in _DROPPED_BY_SELECTIVE:
            continue
        total += t.values_per_token * _bytes(t.kind, precision)
    return total


def layer_bytes_per_token(cfg: ModelConfig, moe: bool, precision: TrainingPrecision) -> float:
    """Bytes one decoder layer keeps per token until its backward pass."""
    if precision.recompute == "full":
        return cfg.hidden_size * precision.activation_bytes  # the checkpointed layer input
    return tensors_bytes(layer_tensors(cfg, moe, precision), precision)


def stage_bytes_per_token(cfg: ModelConfig, stage: Stage, precision: TrainingPrecision) -> float:
    """Bytes per token one micro-batch keeps in `stage` between its forward and backward."""
    total = sum(layer_bytes_per_token(cfg, cfg.is_moe_layer(layer), precision) for layer in stage.layers)
    if stage.embedding:
        total += 4  # the token ids (int32) for the embedding's gradient
    if stage.head:
        total += tensors_bytes(head_tensors(cfg), precision, "none" if precision.recompute == "full" else None)
    for _ in range(stage.mtp_modules):
        total += tensors_bytes(mtp_extra_tensors(cfg) + head_tensors(cfg), precision,
                               "none" if precision.recompute == "full" else None)
        total += layer_bytes_per_token(cfg, True, precision)
    return total

