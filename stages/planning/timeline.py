"""Event simulation of a pipeline schedule: each device runs its ops in order, an op
starting as soon as the device is free and every pass it contains has its inputs.

Dependencies (stage s of a direction; stages are numbered from that direction's input):
  F  at s > 0      needs F of the same micro-batch at s-1, plus one p2p hop;
  B/BI at s < PP-1 needs the backward (B or BI) at s+1, plus one p2p hop;
  B/BI at PP-1     needs the F at PP-1 (the loss is computed in the last forward);
  W                needs the BI of the same micro-batch and stage.
An op's outputs are sent when the whole op ends (DualPipe sends after an F&B pair).

Activations: a micro-batch's activations of one stage are allocated when its F starts
and freed when its backward is done with them: at the end of B, or of W after a split
(the weight gradients need the layer inputs). Inside an F&B pair the forward allocates
before the backward frees, which is where DualPipe's "PP+1" comes from.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from stages.planning.schedules import Op, Pass, Schedule, ScheduleError


@dataclasses.dataclass(frozen=True)
class StageCosts:
    """Durations of one chunk (one micro-batch through one stage), any time unit."""
    forward: float                          # F
    backward: float                         # B: input + weight gradients
    weight: float                           # W: the weight-gradient part of B
    forward_backward: float | None = None   # F&B: a forward and a backward chunk overlapped; default F + B

    def __post_init__(self):
        for name in ("forward", "backward", "weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.weight > self.backward:
            raise ValueError(f"weight ({self.weight}) is part of backward ({self.backward}) and cannot exceed it")

    @property
    def pair(self) -> float:
        return self.forward + self.backward if self.forward_backward is None else self.forward_backward

    def duration(self, op: Op, device: int, stages: Sequence[int]) -> float:
        if len(op.passes) == 2:
            return self.pair
        kind = op.passes[0].kind
        return {"F": self.forward, "B": self.backward, "BI": self.backward - self.weight,
                "W": self.weight}[kind]


# A cost model: (op, device, the stage of each of the op's passes) -> duration
CostModel = Callable[[Op, int, Sequence[int]], float]


@dataclasses.dataclass(frozen=True)
class TimedOp:
    device: int
    op: Op
    stages: tuple[int, ...]   # the stage each pass of the op runs on this device
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class Timeline:
    schedule: Schedule
    ops: tuple[tuple[TimedOp, ...], ...]   # per device, in order

    @property
    def makespan(self) -> float:
        return max(t.end for ops in self.ops for t in ops) - min(t.start for ops in self.ops for t in ops)

    def busy(self, device: int) -> float:
        return sum(t.end - t.start for t in self.ops[device])

    def bubble(self, device: int) -> float:
        """Idle time of `device` within the step: makespan minus its busy time."""
        return self.makespan - self.busy(device)

    @property
    def bubbles(self) -> list[float]:
        return [self.bubble(d) for d in range(len(self.ops))]

    def activation_events(self, device: int) -> list[tuple[float, int, int, int]]:
        """(time, +1 alloc / -1 free, stage, direction) for one device, frees first at equal times."""
        events = []
        for t in self.ops[device]:
            for p, stage in zip(t.op.passes, t.stages):
                if p.kind == "F":
                    events.append((t.start, +1, stage, p.direction))
                elif p.kind in ("B", "W"):
                    events.append((t.end, -1, stage, p.direction))
        return sorted(events, key=lambda e: (e[0], e[1]))

    def peak_activations(self, device: int, stage_weights: Sequence[float] | None = None) -> float:
        """Largest sum over in-flight (micro-batch, stage) activations on `device`, each
        counted as stage_weights[stage] (default 1: units of one micro-batch of one stage)."""
        level = peak = 0.0
        for _, sign, stage, _ in self.activation_events(device):
            level += sign * (1.0 if stage_weights is None else stage_weights[stage])
            peak = max(peak, level)
        return peak

    @property
    def peak_in_flight(self) -> list[int]:
        return [int(round(self.peak_activations(d))) for d in range(len(self.ops))]


def _waits_for(schedule: Schedule, device: int, p: Pass) -> tuple[tuple[str, int, int, int], bool] | None:
    """The finished pass that `p` on `device` needs, as a key (class, micro-batch,
    direction, stage), and whether its result comes from another device."""
    stage = schedule.stage_of(device, p.direction)
    if p.kind == "F":
        return (("F", p.micro_batch, p.direction, stage - 1), True) if stage > 0 else None
    if p.kind in ("B", "BI"):
        if stage < schedule.pipeline_parallel_size - 1:
            return ("B", p.micro_batch, p.direction, stage + 1), True   # class "B": a B or a BI
        return ("F", p.micro_batch, p.direction, stage), False
    return ("BI", p.micro_batch, p.direction, stage), False             # W: its own BI


def simulate(schedule: Schedule, costs: StageCosts | CostModel, p2p_time: float = 0.0) -> Timeline:
    """Start every op at max(device free, inputs ready); `p2p_time` is added to every
    hop between devices (activation or gradient send)."""
    duration = costs.duration if isinstance(costs, StageCosts) else costs
    pp = schedule.pipeline_parallel_size
    done: dict[tuple[str, int, int, int], float] = {}   # end time of each finished pass, by key
    free = [0.0] * pp
    cursor = [0] * pp
    timed: list[list[TimedOp]] = [[] for _ in range(pp)]
    remaining = sum(len(ops) for ops in schedule.device_ops)
    while remaining:
        progressed = False
        for dev in range(pp):
            ops = schedule.device_ops[dev]
            while cursor[dev] < len(ops):
                op = ops[cursor[dev]]
                ready = free[dev]
                for p in op.passes:
                    need = _waits_for(schedule, dev, p)
                    if need is None:
                        continue
                    key, remote = need
                    if key not in done:
                        break
                    ready = max(ready, done[key] + (p2p_time if remote else 0.0))
                else:  # every input is there: run it
                    stages = tuple(schedule.stage_of(dev, p.direction) for p in op.passes)
                    end = ready + duration(op, dev, stages)
                    for p, stage in zip(op.passes, stages):
                        cls = "B" if p.kind == "BI" else p.kind
                        done[(cls, p.micro_batch, p.direction, stage)] = end
                        if p.kind == "BI":
                            done[("BI", p.micro_batch, p.direction, stage)] = end
                    timed[dev].append(TimedOp(dev, op, stages, ready, end))
                    free[dev] = end
                    cursor[dev] += 1
                    remaining -= 1
                    progressed = True
                    continue
                break
        if not progressed:
            stuck = [f"device {d}: {schedule.device_ops[d][cursor[d]].label}" for d in range(pp)
                     if cursor[d] < len(schedule.device_ops[d])]
            raise ScheduleError(f"schedule {schedule.name} deadlocks; waiting: {'; '.join(stuck[:4])}")
    return Timeline(schedule, tuple(tuple(ops) for ops in timed))
