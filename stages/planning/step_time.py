"""Step time: the schedule simulated with per-stage chunk costs (compute + expert
all-to-all + pipeline sends), then the data-parallel synchronisation.

Chunk durations on one device:
  F alone   compute + its all-to-alls (exposed)
  B alone   compute (with recompute) + its all-to-alls;  BI: the same minus W;  W: compute
  F&B pair  (DualPipe) max(compute of both x S / (S - S_comm), all-to-alls of both): each
            chunk's communication hides under the other's computation (V3 §3.2.1,
            Figure 4) while S_comm of the S SMs drive the communication (20 of 132 on
            the H800, §3.2.2), which slows the computation by S / (S - S_comm).
1F1B and ZB1P pair nothing, so their all-to-alls are exposed. A pipeline hop costs one
hidden state over IB. The gradient reduce-scatter and weight all-gather of ZeRO run
over IB after the last backward, counted as exposed (an upper bound: they can start
during the cool-down). The optimizer update itself is left out.
"""

from __future__ import annotations

import dataclasses

from model.config import ModelConfig
from model.flops import training_flops_per_token
from stages.planning.communication import (data_parallel_sync, expert_all_to_all, moe_layers, pipeline_sends)
from stages.planning.costs import LayerCosts
from stages.planning.devices import DeviceSpec
from stages.planning.memory import all_stage_parameters
from stages.planning.layout import ParallelLayout, Stage, split_stages
from stages.planning.precision import TrainingPrecision
from stages.planning.schedules import Op, build_schedule
from stages.planning.timeline import Timeline, simulate


def stage_piece_counts(cfg: ModelConfig, stage: Stage) -> dict[str, int]:
    dense = sum(not cfg.is_moe_layer(layer) for layer in stage.layers)
    moe = stage.num_layers - dense + stage.mtp_modules
    counts = {"attention": stage.num_layers + stage.mtp_modules, "dense_mlp": dense, "moe_mlp": moe,
              "head": (1 + stage.mtp_modules) if stage.head else 0, "mtp_projection": stage.mtp_modules}
    return {k: v for k, v in counts.items() if v}


@dataclasses.dataclass(frozen=True)
class ChunkCost:
    """Seconds of one micro-batch through one stage."""
    forward: float
    backward: float             # full backward incl. recompute
    weight: float               # its W part
    forward_comm: float         # expert all-to-alls of the forward
    backward_comm: float


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    timeline: Timeline
    chunks: tuple[ChunkCost, ...]       # per stage
    pipeline_seconds: float             # simulated makespan
    data_parallel_seconds: float
    bubbles: tuple[float, ...]          # per device, seconds
    exposed_comm: tuple[float, ...]     # per device, seconds of all-to-all not hidden
    tokens_per_step: int
    num_gpus: int
    model_flops_per_token: float
    peak_flops: float
    costs_source: str
    estimate: bool
    table2: dict                        # the paper's formula with this step's F, B, W, F&B

    @property
    def step_seconds(self) -> float:
        return self.pipeline_seconds + self.data_parallel_seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.step_seconds

    @property
    def bubble_share(self) -> float:
        """Idle time as a share of the pipeline part of the step, mean over devices."""
        return sum(self.bubbles) / len(self.bubbles) / self.pipeline_seconds

    @property
    def mfu(self) -> float:
        return self.model_flops_per_token * self.tokens_per_second / (self.num_gpus * self.peak_flops)

    def as_dict(self) -> dict:
        return {"step_seconds": self.step_seconds, "pipeline_seconds": self.pipeline_seconds,
                "data_parallel_seconds": self.data_parallel_seconds, "tokens_per_second": self.tokens_per_second,
                "tokens_per_second_per_gpu": self.tokens_per_second / self.num_gpus, "mfu": self.mfu,
                "bubble_share": self.bubble_share, "bubbles": list(self.bubbles),
                "exposed_all_to_all_seconds": list(self.exposed_comm),
                "chunks": [dataclasses.asdict(c) for c in self.chunks], "costs_source": self.costs_source,
                "estimate": self.estimate, "table2": self.table2}


def estimate_step(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision, device: DeviceSpec,
                  costs: LayerCosts, comm_sms: int = 20, overlap: bool | None = None) -> StepEstimate:
    """`overlap`: pair chunks and hide their all-to-alls (default: DualPipe only)."""
    layout.validate(cfg)
    overlap = layout.schedule == "dualpipe" if overlap is None else overlap
    stages = split_stages(cfg, layout.pipeline_parallel_size)
    tokens = layout.tokens_per_micro_batch
    a2a = expert_all_to_all(cfg, layout, precision)
    fwd_layer = a2a.per_layer_micro_batch().seconds(device.ib_gbps, device.nvlink_gbps)
    bwd_layer = a2a.per_layer_micro_batch(backward=True).seconds(device.ib_gbps, device.nvlink_gbps)
    chunks = []
    for stage in stages:
        f, b, w = costs.chunk(stage_piece_counts(cfg, stage), tokens, precision.recompute)
        n = moe_layers(cfg, stage)
        chunks.append(ChunkCost(f, b, w, n * fwd_layer, n * bwd_layer))
    slowdown = device.sms / (device.sms - comm_sms) if overlap else 1.0

    def parts(op: Op, stages_of: tuple[int, ...]) -> list[tuple[float, float]]:
        """(compute, communication) of each pass of an op."""
        out = []
        for p, s in zip(op.passes, stages_of):
            c = chunks[s]
            out.append({"F": (c.forward, c.forward_comm), "B": (c.backward, c.backward_comm),
                        "BI": (c.backward - c.weight, c.backward_comm), "W": (c.weight, 0.0)}[p.kind])
        return out

    exposed = [0.0] * layout.pipeline_parallel_size

    def duration(op: Op, device_index: int, stages_of) -> float:
        pieces = parts(op, stages_of)
        compute = sum(c for c, _ in pieces)
        comm = sum(m for _, m in pieces)
        if len(pieces) == 2 and overlap:
            hidden = max(compute * slowdown, comm)
            exposed[device_index] += hidden - compute * slowdown
            return hidden
        exposed[device_index] += comm
        return compute + comm

    schedule = build_schedule(layout.schedule, layout.pipeline_parallel_size, layout.num_micro_batches)
    hop = pipeline_sends(cfg, layout, precision).bytes_per_hop / (device.ib_gbps * 1e9)
    timeline = simulate(schedule, duration, p2p_time=hop)
    params = all_stage_parameters(cfg, layout)
    dp_seconds = max(data_parallel_sync(cfg, layout, precision, device=d, params=params).total
                     for d in range(layout.pipeline_parallel_size)) / (device.ib_gbps * 1e9)
    middle = chunks[len(chunks) // 2]
    F, B, W = middle.forward + middle.forward_comm, middle.backward + middle.backward_comm, middle.weight
    FB = max((middle.forward + middle.backward) * slowdown, middle.forward_comm + middle.backward_comm) \
        if overlap else F + B
    pp = layout.pipeline_parallel_size
    formula = {"1f1b": (pp - 1) * (F + B), "zb1p": (pp - 1) * (F + B - 2 * W),
               "dualpipe": (pp / 2 - 1) * (FB + B - 3 * W)}[layout.schedule]
    return StepEstimate(
        timeline=timeline, chunks=tuple(chunks), pipeline_seconds=timeline.makespan,
        data_parallel_seconds=dp_seconds, bubbles=tuple(timeline.bubbles), exposed_comm=tuple(exposed),
        tokens_per_step=layout.global_batch_size * layout.seq_len, num_gpus=layout.num_gpus,
        model_flops_per_token=training_flops_per_token(cfg, layout.seq_len),
        peak_flops=device.bf16_tflops * 1e12, costs_source=costs.source, estimate=costs.estimate,
        table2={"F": F, "B": B, "W": W, "F&B": FB, "bubble_formula": formula,
                "bubble_simulated_max": max(timeline.bubbles), "middle_stage": len(chunks) // 2,
                "compute_to_all_to_all": middle.forward / middle.forward_comm if middle.forward_comm else None})

