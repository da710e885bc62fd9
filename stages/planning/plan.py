"""One plan: a model under a layout on a device, with its memory, communication,
pipeline simulation and step-time estimate together."""

from __future__ import annotations

import dataclasses

from model.config import ModelConfig, kv_cache_values_per_token
from stages.planning.communication import (AllToAll, DataParallelSync, PipelineSends, data_parallel_sync,
                                           expert_all_to_all, pipeline_sends)
from stages.planning.costs import LayerCosts, roofline_costs
from stages.planning.devices import DeviceSpec, get_device
from stages.planning.layout import ParallelLayout, Stage, split_stages
from stages.planning.memory import DEFAULT_RESERVED_BYTES, MemoryPlan, all_stage_parameters, memory_plan
from stages.planning.precision import TrainingPrecision, get_recipe
from stages.planning.step_time import StepEstimate, estimate_step

DEFAULT_MFU = 0.40   # assumed share of the BF16 dense peak the layers reach; an assumption, not a measurement


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    config: ModelConfig
    layout: ParallelLayout
    precision: TrainingPrecision
    device: DeviceSpec
    stages: tuple[Stage, ...]
    memory: MemoryPlan
    all_to_all_naive: AllToAll
    all_to_all: AllToAll              # node-limited
    data_parallel: DataParallelSync   # the device that sends the most
    pipeline: PipelineSends
    step: StepEstimate
    kv_cache_bytes_per_token: float   # inference, BF16, all layers

    def as_dict(self) -> dict:
        def link(b):
            return {"ib": b.ib, "nvlink": b.nvlink}

        def a2a(a: AllToAll):
            return {"copies_per_token": dataclasses.asdict(a.copies),
                    "per_token_per_moe_layer": link(a.per_token_layer),
                    "per_token_per_moe_layer_forward": link(a.per_token_layer_forward),
                    "per_token_per_moe_layer_backward": link(a.per_token_layer_backward),
                    "per_step": link(a.per_step), "moe_layer_passes_per_step": a.moe_layer_passes_per_step,
                    "tokens_per_micro_batch": a.tokens_per_micro_batch}

        return {"name": self.name, "layout": dataclasses.asdict(self.layout),
                "expert_data_parallel_size": self.layout.expert_data_parallel_size,
                "device": dataclasses.asdict(self.device),
                "stages": [dataclasses.asdict(s) for s in self.stages],
                "memory": self.memory.as_dict(),
                "all_to_all": {"naive": a2a(self.all_to_all_naive), "node_limited": a2a(self.all_to_all)},
                "data_parallel": dataclasses.asdict(self.data_parallel),
                "pipeline_sends": dataclasses.asdict(self.pipeline),
                "pipeline": {"schedule": self.layout.schedule, "parameter_copies": self.layout.parameter_copies,
                             "peak_in_flight": [d.peak_in_flight for d in self.memory.devices]},
                "step": self.step.as_dict(),
                "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token}


def make_plan(cfg: ModelConfig, layout: ParallelLayout, precision: TrainingPrecision | str = "deepseek-v3",
              device: DeviceSpec | str = "h800", costs: LayerCosts | None = None, mfu: float = DEFAULT_MFU,
              name: str = "", reserved_bytes: float = DEFAULT_RESERVED_BYTES) -> Plan:
    layout.validate(cfg)
    precision = get_recipe(precision) if isinstance(precision, str) else precision
    spec = get_device(device) if isinstance(device, str) else device
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu (--mfu) must be in (0, 1], got {mfu}")
    costs = costs or roofline_costs(
        cfg, layout.seq_len, mfu * spec.bf16_tflops,
        f"roofline: model/flops.py FLOPs at an assumed {mfu:.0%} of the {spec.bf16_tflops:g} "
        f"TFLOP/s BF16 dense peak")
    step = estimate_step(cfg, layout, precision, spec, costs)
    memory = memory_plan(cfg, layout, precision, spec, timeline=step.timeline, reserved_bytes=reserved_bytes)
    params = all_stage_parameters(cfg, layout)
    syncs = [data_parallel_sync(cfg, layout, precision, device=d, params=params)
             for d in range(layout.pipeline_parallel_size)]
    cache = kv_cache_values_per_token(cfg)["mla"] * cfg.num_hidden_layers * 2.0
    return Plan(name, cfg, layout, precision, spec, tuple(split_stages(cfg, layout.pipeline_parallel_size)), memory,
                expert_all_to_all(cfg, layout, precision, node_limited=False),
                expert_all_to_all(cfg, layout, precision, node_limited=True),
                max(syncs, key=lambda s: s.total), pipeline_sends(cfg, layout, precision), step, cache)
