"""Memory per device for a model under a parallel layout.

Per device (one pipeline rank of one data-parallel replica), in bytes:
  weights            parameters held x weight_bytes. A stage's non-expert parameters
                     (attention, norms, dense MLPs, shared experts, router, embedding,
                     head, MTP) are whole on each device of the stage; its routed experts
                     are split over EP. DualPipe holds two stages (two model copies).
  gradients          parameters held x grad_bytes
  optimizer_states   parameters held x (master + 2 moments) bytes
  activations        the peak, over the simulated schedule, of the micro-batches in
                     flight on the device, each weighted by its stage's bytes per
                     micro-batch (activations.stage_bytes_per_token x tokens)
  workspace          transients: one layer's backward (its gradients, or its rebuilt
                     activations under full recompute) and the FP32 logits of a head
  reserved           CUDA context, NCCL and all-to-all buffers: an assumption (2 GiB)
ZeRO (Rajbhandari et al. 2020) shards over all replicas of a parameter: stage 1 the
optimizer states, stage 2 also the gradients, stage 3 also the weights (plus one
gathered layer at a time). A stage's non-expert parameters have DP x copies replicas,
its experts num_gpus / (PP x EP) x copies (DualPipe keeps stage s on ranks s and PP-1-s).
The router's e_score_correction_bias is an FP32 buffer: weights only.
"""

from __future__ import annotations

import dataclasses
import math

from model.config import ModelConfig, decoder_layer_shapes, mtp_layer_shapes
from stages.planning import activations
from stages.planning.devices import GIB, DeviceSpec, get_device
from stages.planning.layout import ParallelLayout, Stage, split_stages
from stages.planning.precision import TrainingPrecision, get_recipe
from stages.planning.schedules import build_schedule
from stages.planning.timeline import StageCosts, Timeline, simulate

DEFAULT_RESERVED_BYTES = 2 * GIB
_BUFFER = "e_score_correction_bias"


@dataclasses.dataclass(frozen=True)
class StageParameters:
    """Parameter counts of one pipeline stage (one model copy)."""
    non_expert: int           # replicated over DP
    experts: int              # all routed experts of the stage; a device holds experts / EP
    buffers: int              # non-trainable FP32 values (router bias)
    largest_layer: int        # non-expert + routed parameters of its largest layer (ZeRO-3 gather)
    largest_layer_experts: int


def _split(shapes: dict[str, tuple[int, ...]]) -> tuple[int, int, int]:
    non_expert = experts = buffers = 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        if name.endswith(_BUFFER):
            buffers += n
        elif ".experts." in f".{name}":
            experts += n
        else:
            non_expert += n
    return non_expert, experts, buffers


def stage_parameters(cfg: ModelConfig, stage: Stage, embedding_copy: bool = False) -> StageParameters:
    """`embedding_copy`: the last stage also holds the embedding, which its MTP modules
    read, when no device holds both ends of the pipeline (all schedules but DualPipe)."""
    h, v = cfg.hidden_size, cfg.vocab_size
    # every dense layer has the same shapes, and every MoE layer: count each kind once
    kinds = {moe: _split(decoder_layer_shapes(cfg, cfg.first_k_dense_replace if moe else 0))
             for moe in {cfg.is_moe_layer(layer) for layer in stage.layers}}
    blocks = [kinds[cfg.is_moe_layer(layer)] for layer in stage.layers]
    blocks += [_split(mtp_layer_shapes(cfg, d, with_shared_copies=False)) for d in range(stage.mtp_modules)]
    non_expert = sum(n for n, _, _ in blocks)
    experts = sum(e for _, e, _ in blocks)
    buffers = sum(b for _, _, b in blocks)
    largest = max(((n + e, e) for n, e, _ in blocks), default=(0, 0))
    if stage.embedding:
        non_expert += v * h
    if stage.head:
        non_expert += h + (0 if cfg.tie_word_embeddings else v * h)  # model.norm, lm_head
        if embedding_copy and stage.mtp_modules and not stage.embedding:
            non_expert += v * h
    return StageParameters(non_expert, experts, buffers, largest[0], largest[1])


def all_stage_parameters(cfg: ModelConfig, layout: ParallelLayout) -> list[StageParameters]:
    """Every stage's parameters under the layout (the MTP embedding copy included)."""
    copy_needed = layout.pipeline_parallel_size > 1 and layout.schedule != "dualpipe"
    return [stage_parameters(cfg, s, embedding_copy=copy_needed)
            for s in split_stages(cfg, layout.pipeline_parallel_size)]


@dataclasses.dataclass(frozen=True)
class DeviceMemory:
    """One device's memory, bytes unless named otherwise. `as_dict` gives plain numbers."""
    device: int                       # pipeline rank
    stages: tuple[int, ...]
    parameters: int                   # parameter values held (both copies under DualPipe)
    expert_parameters: int            # of which routed-expert values
    weights: float
    gradients: float
    optimizer_states: float
    activations: float
    workspace: float
    reserved: float
    activations_per_micro_batch: float   # one micro-batch through each of the device's stages
    peak_in_flight: float                # peak micro-batch-stages in flight (the schedule's unit)
    capacity: int

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer_states

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.workspace + self.reserved

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(stages=list(self.stages), model_states=self.model_states, total=self.total, fits=self.fits)
        return d


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    layout: ParallelLayout
    precision: TrainingPrecision
    device_spec: DeviceSpec
    stages: tuple[Stage, ...]
    stage_params: tuple[StageParameters, ...]
    devices: tuple[DeviceMemory, ...]

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def largest(self) -> DeviceMemory:
        return max(self.devices, key=lambda d: d.total)

    def as_dict(self) -> dict:
        return {"device": self.device_spec.name, "capacity": self.device_spec.memory_bytes, "fits": self.fits,
                "recipe": dataclasses.asdict(self.precision), "devices": [d.as_dict() for d in self.devices]}


def _replicas(layout: ParallelLayout) -> tuple[int, int]:
    copies = layout.parameter_copies
    return layout.data_parallel_size * copies, layout.expert_data_parallel_size * copies


def unit_timeline(layout: ParallelLayout) -> Timeline:
    """The layout's schedule with Figure 5's cell sizes (F = W = 1, B = 2, F&B = 3): enough
    to count in-flight micro-batches when no measured costs are at hand."""
    schedule = build_schedule(layout.schedule, layout.pipeline_parallel_size, layout.num_micro_batches)
    return simulate(schedule, StageCosts(forward=1.0, backward=2.0, weight=1.0, forward_backward=3.0))


def memory_plan(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision | str = "deepseek-v3",
                device: DeviceSpec | str = "h800", timeline: Timeline | None = None,
                reserved_bytes: float = DEFAULT_RESERVED_BYTES) -> MemoryPlan:
    """Per-device memory of `cfg` trained under `layout`: the breakdown to compare with a
    compiler's memory analysis (`MemoryPlan.devices[d].as_dict()`)."""
    layout.validate(cfg)
    precision = get_recipe(precision) if isinstance(precision, str) else precision
    spec = get_device(device) if isinstance(device, str) else device
    timeline = timeline or unit_timeline(layout)
    stages = split_stages(cfg, layout.pipeline_parallel_size)
    params = all_stage_parameters(cfg, layout)
    tokens = layout.tokens_per_micro_batch
    per_mb = [activations.stage_bytes_per_token(cfg, s, precision) * tokens for s in stages]
    ne_replicas, ex_replicas = _replicas(layout)
    ep, zero = layout.expert_parallel_size, layout.zero_stage
    out = []
    for rank in range(layout.pipeline_parallel_size):
        held = layout.stages_of_device(rank)
        non_expert = sum(params[s].non_expert for s in held)
        experts = sum(params[s].experts for s in held) // ep
        buffers = sum(params[s].buffers for s in held)

        def sharded(bytes_per: float, from_stage: int) -> float:
            """A state of `bytes_per` per parameter, divided over the replicas from that ZeRO stage on."""
            if zero >= from_stage:
                return (non_expert / ne_replicas + experts / ex_replicas) * bytes_per
            return (non_expert + experts) * bytes_per

        weights = sharded(precision.weight_bytes, 3) + buffers * 4
        if zero >= 3:  # one layer gathered whole for its forward or backward
            weights += max((params[s].largest_layer - params[s].largest_layer_experts
                            + params[s].largest_layer_experts // ep) for s in held) * precision.weight_bytes
        gradients = sharded(precision.grad_bytes, 2)
        optimizer = sharded(precision.optimizer_bytes, 1)
        peak = timeline.peak_activations(rank, per_mb)
        workspace = max(_workspace_per_token(cfg, stages[s], precision) for s in held) * tokens
        out.append(DeviceMemory(
            device=rank, stages=held, parameters=non_expert + experts, expert_parameters=experts,
            weights=weights, gradients=gradients, optimizer_states=optimizer, activations=peak,
            workspace=workspace, reserved=reserved_bytes,
            activations_per_micro_batch=sum(per_mb[s] for s in held),
            peak_in_flight=timeline.peak_activations(rank), capacity=spec.memory_bytes))
    return MemoryPlan(layout, precision, spec, tuple(stages), tuple(params), tuple(out))


def _workspace_per_token(cfg: ModelConfig, stage: Stage, precision: TrainingPrecision) -> float:
    """The largest layer's full activation set (its gradients while it runs backward, or
    its rebuilt activations under full recompute) plus FP32 logits where a head is."""
    kinds = {cfg.is_moe_layer(layer) for layer in stage.layers} | ({True} if stage.mtp_modules else set())
    layer = max((activations.tensors_bytes(activations.layer_tensors(cfg, moe, precision), precision, "none")
                 for moe in kinds), default=0.0)
    logits = cfg.vocab_size * 4.0 if stage.head else 0.0
    return layer + logits


def kv_cache_bytes(cfg: ModelConfig, tokens: int, bytes_per_value: float = 2.0) -> float:
    """Inference: MLA's absorbed cache, kv_lora_rank + qk_rope_head_dim values per token
    per layer (576 for V3), over the decoder layers."""
    from model.config import kv_cache_values_per_token
    return kv_cache_values_per_token(cfg)["mla"] * cfg.num_hidden_layers * tokens * bytes_per_value
