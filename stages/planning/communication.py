"""Bytes a device sends per step: expert-parallel all-to-all, data-parallel gradient
and weight synchronisation, and pipeline sends.

Expert all-to-all, per MoE layer and per token of the device's micro-batch, with the
token's K = num_experts_per_tok experts spread uniformly over an EP group of N nodes of
G GPUs (balanced routing, which the auxiliary-loss-free balancing aims at):
- naive: one copy per expert, straight to its GPU. Off-node copies K (1 - 1/N) cross
  InfiniBand; on-node copies to other GPUs K (1/N)(1 - 1/G) cross NVLink.
- node-limited (V3 §2.1.2 and §3.2.2): a token goes to at most M nodes (M = topk_group
  when the EP nodes hold one expert group each: M = 4 of 8 for V3). It crosses IB once
  per target node other than its own, M (1 - 1/N) copies on average (the own node is
  among the M with probability M / N; at most M), lands on the GPU with the same local
  index, and is forwarded over NVLink to the GPUs of its experts there: K (1 - 1/G)
  copies over NVLink. Combine runs the same routes backwards, summing per node first.
Per MoE layer per micro-batch a device runs four all-to-alls: dispatch and combine in
the forward, and their gradients in the backward (the combine's gradient goes out like
a dispatch, the dispatch's like a combine). V3 sends dispatches (and the gradient
before the down-projections) in FP8 and combines in BF16 (§3.3.2).

Data parallel (ring algorithms, (R-1)/R of the buffer per device for a group of R):
ZeRO-0 all-reduces the gradients (2x); ZeRO-1 and -2 reduce-scatter the gradients and
all-gather the updated weights; ZeRO-3 also all-gathers the weights before every
micro-batch's forward and backward (the ZeRO paper's 1.5x, times the micro-batches
when gradients accumulate over a pipeline).

Pipeline: each micro-batch sends its hidden state (tokens x hidden, BF16) to the next
stage and the gradient of it back.
"""

from __future__ import annotations

import dataclasses

from model.config import ModelConfig
from stages.planning.layout import ParallelLayout, Stage, split_stages
from stages.planning.memory import StageParameters, all_stage_parameters
from stages.planning.precision import TrainingPrecision


@dataclasses.dataclass(frozen=True)
class LinkBytes:
    ib: float
    nvlink: float

    def __add__(self, other: "LinkBytes") -> "LinkBytes":
        return LinkBytes(self.ib + other.ib, self.nvlink + other.nvlink)

    def __mul__(self, k: float) -> "LinkBytes":
        return LinkBytes(self.ib * k, self.nvlink * k)

    __rmul__ = __mul__

    @property
    def total(self) -> float:
        return self.ib + self.nvlink

    def seconds(self, ib_gbps: float, nvlink_gbps: float) -> float:
        """IB and NVLink legs run concurrently (the NVLink forwarding of DeepEP-style
        kernels is pipelined with the IB transfers), so the slower leg sets the time."""
        return max(self.ib / (ib_gbps * 1e9), self.nvlink / (nvlink_gbps * 1e9))


@dataclasses.dataclass(frozen=True)
class ExpertCopies:
    """Copies of one token leaving its GPU in one dispatch (or arriving in one combine)."""
    ib: float
    nvlink: float
    max_nodes: int           # M: nodes one token may reach


def max_nodes_per_token(cfg: ModelConfig, layout: ParallelLayout) -> int:
    nodes = layout.ep_nodes
    if nodes <= 1:
        return 1
    nodes_per_group = max(1, nodes // cfg.n_group)
    return min(cfg.num_experts_per_tok, nodes, cfg.topk_group * nodes_per_group)


def naive_copies(cfg: ModelConfig, layout: ParallelLayout) -> ExpertCopies:
    k, n, g = cfg.num_experts_per_tok, layout.ep_nodes, layout.ep_gpus_per_node
    return ExpertCopies(ib=k * (1 - 1 / n), nvlink=k / n * (1 - 1 / g), max_nodes=min(k, n))


def node_limited_copies(cfg: ModelConfig, layout: ParallelLayout) -> ExpertCopies:
    k, n, g = cfg.num_experts_per_tok, layout.ep_nodes, layout.ep_gpus_per_node
    m = max_nodes_per_token(cfg, layout)
    return ExpertCopies(ib=m * (1 - 1 / n), nvlink=k * (1 - 1 / g), max_nodes=m)


@dataclasses.dataclass(frozen=True)
class AllToAll:
    """Bytes one device sends in the expert all-to-alls (for combines: receives; the
    routes are symmetric)."""
    per_token_layer_forward: LinkBytes     # dispatch + combine of one token in one MoE layer
    per_token_layer_backward: LinkBytes
    moe_layer_passes_per_step: int         # micro-batch x MoE-layer forwards one device runs per step
    tokens_per_micro_batch: int
    copies: ExpertCopies

    @property
    def per_token_layer(self) -> LinkBytes:
        return self.per_token_layer_forward + self.per_token_layer_backward

    @property
    def per_step(self) -> LinkBytes:
        return self.per_token_layer * (self.tokens_per_micro_batch * self.moe_layer_passes_per_step)

    def per_layer_micro_batch(self, backward: bool = False) -> LinkBytes:
        one = self.per_token_layer_backward if backward else self.per_token_layer_forward
        return one * self.tokens_per_micro_batch


def moe_layers(cfg: ModelConfig, stage: Stage) -> int:
    return sum(cfg.is_moe_layer(layer) for layer in stage.layers) + stage.mtp_modules


def expert_all_to_all(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision,
                      node_limited: bool = True, device: int | None = None) -> AllToAll:
    """All-to-all of the device `device` (default: the one with the most MoE layers)."""
    copies = node_limited_copies(cfg, layout) if node_limited else naive_copies(cfg, layout)
    h = cfg.hidden_size
    one = lambda dtype: LinkBytes(copies.ib * h * dtype, copies.nvlink * h * dtype)
    forward = one(precision.dispatch_bytes) + one(precision.combine_bytes)
    backward = one(precision.dispatch_bytes) + one(precision.combine_bytes)
    stages = split_stages(cfg, layout.pipeline_parallel_size)
    per_stage = layout.micro_batches_per_stage()
    passes = [sum(moe_layers(cfg, stages[s]) for s in layout.stages_of_device(d)) * per_stage
              for d in range(layout.pipeline_parallel_size)]
    chosen = max(passes) if device is None else passes[device]
    return AllToAll(forward, backward, chosen, layout.tokens_per_micro_batch, copies)


@dataclasses.dataclass(frozen=True)
class DataParallelSync:
    """Bytes one device sends per step to synchronise gradients and weights."""
    non_expert_replicas: int
    expert_replicas: int
    gradient_bytes: float        # reduce-scatter (ZeRO >= 1) or all-reduce (ZeRO-0)
    weight_bytes: float          # all-gathers of weights

    @property
    def total(self) -> float:
        return self.gradient_bytes + self.weight_bytes


def data_parallel_sync(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision,
                       device: int = 1, params: list[StageParameters] | None = None) -> DataParallelSync:
    """Per-step bytes of pipeline rank `device`; `params`: all_stage_parameters, if at hand."""
    params = params or all_stage_parameters(cfg, layout)
    held = layout.stages_of_device(device)
    non_expert = sum(params[s].non_expert for s in held)
    experts = sum(params[s].experts for s in held) / layout.expert_parallel_size
    copies = layout.parameter_copies
    r_ne, r_ex = layout.data_parallel_size * copies, layout.expert_data_parallel_size * copies
    ring = lambda n, r: n * (r - 1) / r
    grads = ring(non_expert, r_ne) + ring(experts, r_ex)
    gathered = grads  # the same element counts travel as weights
    zero = layout.zero_stage
    if zero == 0:
        return DataParallelSync(r_ne, r_ex, 2 * grads * precision.grad_bytes, 0.0)
    if zero == 3:  # gathered before each micro-batch's forward and again for its backward
        weights = 2 * layout.micro_batches_per_stage() * gathered * precision.weight_bytes
    else:          # the updated shards, gathered once after the optimizer step
        weights = gathered * precision.weight_bytes
    return DataParallelSync(r_ne, r_ex, grads * precision.grad_bytes, weights)


@dataclasses.dataclass(frozen=True)
class PipelineSends:
    bytes_per_hop: float         # one micro-batch's hidden state (or its gradient)
    bytes_per_step: float        # all sends of one device in a step


def pipeline_sends(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision,
                   device: int = 1) -> PipelineSends:
    pp = layout.pipeline_parallel_size
    hop = layout.tokens_per_micro_batch * cfg.hidden_size * precision.activation_bytes
    sends = 0
    for stage in layout.stages_of_device(device):
        sends += (stage < pp - 1) + (stage > 0)   # forward to the next stage, gradient to the previous
    return PipelineSends(hop, hop * sends * layout.micro_batches_per_stage())
