"""A parallel layout (EP x PP x DP, TP = 1, a ZeRO stage, a pipeline schedule) and
how it cuts a model: which layers each pipeline stage holds and which stages each
device holds.

Names follow Megatron-LM / DeepSpeed where they exist (expert_parallel_size,
pipeline_model_parallel_size shortened to pipeline_parallel_size, zero_stage,
micro_batch_size, global_batch_size).

The DeepSeek-V3 layout (paper §3.2): 2048 H800 GPUs, PP16, EP64 spanning 8 nodes, ZeRO-1
data parallelism, no tensor parallelism. With TP = 1 each of the PP stages runs on
num_gpus / PP devices, which are its data-parallel replicas for the non-expert weights;
an EP group is EP of those devices, so the experts are replicated num_gpus / (PP x EP)
times ("expert data parallel").
"""

from __future__ import annotations

import dataclasses

from model.config import ModelConfig
from stages.planning.schedules import SCHEDULES, ScheduleError, build_schedule


class LayoutError(ValueError):
    """A layout that cannot run; the message names the field and its CLI flag."""


@dataclasses.dataclass(frozen=True)
class ParallelLayout:
    num_gpus: int
    expert_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int | None = None      # None: num_gpus / (pipeline x tensor)
    tensor_parallel_size: int = 1              # only 1 is modelled (DeepSeek-V3 uses none)
    zero_stage: int = 1
    micro_batch_size: int = 1                  # sequences per micro-batch
    seq_len: int = 4096
    global_batch_size: int = 15360             # sequences per optimizer step
    num_micro_batches: int | None = None       # per pipeline; None: global / (DP x micro_batch_size)
    schedule: str = "dualpipe"
    gpus_per_node: int = 8

    def __post_init__(self):
        if self.data_parallel_size is None and _positive(self.num_gpus) and _positive(self.pipeline_parallel_size):
            object.__setattr__(self, "data_parallel_size", self.num_gpus // self.pipeline_parallel_size)
        if self.num_micro_batches is None and _positive(self.data_parallel_size) and _positive(self.micro_batch_size):
            object.__setattr__(self, "num_micro_batches",
                               self.global_batch_size // max(1, self.data_parallel_size * self.micro_batch_size))

    # ------------------------------------------------------------------ derived sizes
    @property
    def expert_data_parallel_size(self) -> int:
        """Replicas of each routed expert (per model copy)."""
        return self.num_gpus // (self.pipeline_parallel_size * self.expert_parallel_size)

    @property
    def ep_nodes(self) -> int:
        """Nodes one EP group spans (the paper's EP64 spans 8 nodes of 8 GPUs)."""
        return max(1, self.expert_parallel_size // self.gpus_per_node)

    @property
    def ep_gpus_per_node(self) -> int:
        return min(self.expert_parallel_size, self.gpus_per_node)

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.seq_len

    @property
    def parameter_copies(self) -> int:
        return 2 if self.schedule == "dualpipe" else 1

    def stages_of_device(self, device: int) -> tuple[int, ...]:
        """Pipeline stages a device (pipeline rank) holds: DualPipe's rank d holds stage d
        of one model copy and stage PP-1-d of the other."""
        if self.schedule == "dualpipe":
            return (device, self.pipeline_parallel_size - 1 - device)
        return (device,)

    def micro_batches_per_stage(self) -> int:
        """Micro-batches one device pushes through each stage it holds per step."""
        return self.num_micro_batches // self.parameter_copies

    # ------------------------------------------------------------------ validation
    def validate(self, cfg: ModelConfig) -> None:
        fields = {"num_gpus": "--gpus", "expert_parallel_size": "--ep", "pipeline_parallel_size": "--pp",
                  "data_parallel_size": "--dp", "tensor_parallel_size": "--tp", "micro_batch_size": "--micro-batch-size",
                  "seq_len": "--seq-len", "global_batch_size": "--global-batch",
                  "gpus_per_node": "--gpus-per-node"}
        for name, flag in fields.items():
            if not _positive(getattr(self, name)):
                raise LayoutError(f"{name} ({flag}) must be a positive integer, got {getattr(self, name)!r}")
        gpus, ep, pp, dp = self.num_gpus, self.expert_parallel_size, self.pipeline_parallel_size, self.data_parallel_size
        if self.tensor_parallel_size != 1:
            raise LayoutError(f"tensor_parallel_size (--tp) {self.tensor_parallel_size}: only TP = 1 is modelled "
                              "(DeepSeek-V3 trains without tensor parallelism)")
        if self.zero_stage not in (0, 1, 2, 3):
            raise LayoutError(f"zero_stage (--zero) must be 0, 1, 2 or 3, got {self.zero_stage!r}")
        if self.schedule not in SCHEDULES:
            raise LayoutError(f"schedule (--schedule) {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if ep > cfg.n_routed_experts:
            raise LayoutError(f"expert_parallel_size (--ep) {ep} exceeds the model's {cfg.n_routed_experts} routed experts")
        if cfg.n_routed_experts % ep:
            raise LayoutError(f"expert_parallel_size (--ep) {ep} does not divide the {cfg.n_routed_experts} routed experts")
        if gpus % (ep * pp):
            raise LayoutError(f"num_gpus (--gpus) {gpus} is not divisible by expert_parallel_size x pipeline_parallel_size "
                              f"(--ep {ep} x --pp {pp} = {ep * pp})")
        if dp * pp * self.tensor_parallel_size != gpus:
            raise LayoutError(f"data_parallel_size (--dp) {dp} x pipeline_parallel_size (--pp) {pp} must equal "
                              f"num_gpus (--gpus) {gpus} with TP = 1; leave --dp out (auto) for {gpus // pp}")
        if ep > self.gpus_per_node and ep % self.gpus_per_node:
            raise LayoutError(f"expert_parallel_size (--ep) {ep} spans nodes but is not a multiple of "
                              f"gpus_per_node (--gpus-per-node) {self.gpus_per_node}")
        units = cfg.num_hidden_layers + cfg.num_nextn_predict_layers
        if pp > units:
            raise LayoutError(f"pipeline_parallel_size (--pp) {pp} exceeds the {units} layers to split "
                              f"({cfg.num_hidden_layers} decoder + {cfg.num_nextn_predict_layers} MTP)")
        per_pipeline, rest = divmod(self.global_batch_size, dp * self.micro_batch_size)
        if rest or not per_pipeline:
            raise LayoutError(f"global_batch_size (--global-batch) {self.global_batch_size} is not a multiple of "
                              f"data_parallel_size {dp} x micro_batch_size (--micro-batch-size) {self.micro_batch_size}")
        if self.num_micro_batches != per_pipeline:
            raise LayoutError(f"num_micro_batches (--micro-batches) {self.num_micro_batches!r} x data_parallel_size {dp} "
                              f"x micro_batch_size {self.micro_batch_size} must equal global_batch_size "
                              f"(--global-batch) {self.global_batch_size}: leave it out for {per_pipeline}")
        try:
            build_schedule(self.schedule, pp, self.num_micro_batches)
        except ScheduleError as e:
            text = str(e).replace("pipeline_parallel_size", "pipeline_parallel_size (--pp)") \
                         .replace("num_micro_batches", "num_micro_batches (--micro-batches)")
            raise LayoutError(text) from None


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclasses.dataclass(frozen=True)
class Stage:
    """What one pipeline stage holds: decoder layers [first_layer, first_layer + num_layers),
    plus the embedding (stage 0) or the final norm, head and MTP modules (last stage)."""
    index: int
    first_layer: int
    num_layers: int
    embedding: bool
    head: bool
    mtp_modules: int

    @property
    def layers(self) -> range:
        return range(self.first_layer, self.first_layer + self.num_layers)


def split_stages(cfg: ModelConfig, pipeline_parallel_size: int) -> list[Stage]:
    """Cut the decoder layers and MTP modules (each counted as one layer) into
    `pipeline_parallel_size` runs as equal as possible. Where they cannot be equal (61 + 1
    over 16 for V3), the stages with one layer fewer are the ends, first and last in
    turn, since those also hold the embedding and the head. MTP modules sit on the last
    stage with the head they share (V3 paper §2.2, §3.2.1)."""
    pp = pipeline_parallel_size
    units = cfg.num_hidden_layers + cfg.num_nextn_predict_layers
    base, extra = divmod(units, pp)
    sizes = [base + 1] * pp
    ends = [i // 2 if i % 2 == 0 else pp - 1 - i // 2 for i in range(pp)]
    for stage in ends[:pp - extra]:
        sizes[stage] = base
    stages, layer = [], 0
    for s, size in enumerate(sizes):
        mtp = cfg.num_nextn_predict_layers if s == pp - 1 else 0
        decoder = size - mtp
        if decoder < 0:
            raise LayoutError(f"pipeline_parallel_size (--pp) {pp} leaves the last stage too few layers "
                              f"for its {mtp} MTP modules")
        stages.append(Stage(s, layer, decoder, embedding=s == 0, head=s == pp - 1, mtp_modules=mtp))
        layer += decoder
    assert layer == cfg.num_hidden_layers
    return stages
