"""Pipeline schedules as ordered lists of passes per device: 1F1B, ZB1P and DualPipe.

A schedule says only what each device runs and in which order; `timeline.simulate`
turns it into start and end times. The passes, named as in the DeepSeek-V3 paper's
Table 2 (arXiv 2412.19437, §3.2.1):
  F   forward of one micro-batch through one stage (one "chunk"),
  B   full backward of that chunk (gradients for its input and its weights),
  BI  backward for the input only; its weight gradients are a later W pass
      (the zero-bubble split of Qi et al. 2023, arXiv 2401.10241),
  W   backward for the weights of an earlier BI.
DualPipe also runs a forward chunk of one direction and a full backward chunk of the
other as one overlapped op (the paper's "F&B": one's all-to-all hides under the other's
computation, Figure 4).

The orders:
- 1F1B (Narayanan et al. 2021, PipeDream-Flush as in Megatron-LM): device d runs
  PP-1-d warm-up forwards, then alternates F and B, then drains its backwards.
- ZB1P, "ZB-H1" of the zero-bubble paper: 1F1B's order with the backward split into BI
  and W so that backwards reach device 0 sooner; device i defers the W of its first i
  backwards (so at most PP micro-batches are in flight, as in 1F1B) and runs the
  deferred W passes where 1F1B would wait at the end.
- DualPipe (V3 paper §3.2.1 and Figure 5; the phases of deepseek-ai/DualPipe's
  dualpipe.py, reimplemented here from their description): two copies of the model, one
  fed from device 0 ("direction 0", stage d on device d) and one from the last device
  ("direction 1", stage PP-1-d on device d), half the micro-batches each. Device d,
  with k = min(d, PP-1-d) and "own" direction the one whose entry is nearer, runs
    1. 2(PP/2-k-1) forwards of its own direction,
    2. k+1 pairs: a forward of each direction,
    3. PP/2-k-1 times: BI, W, F of the other direction (zero-bubble split),
    4. the steady state: pairs of overlapped chunks, F(own)&B(other), F(other)&B(own),
       except that the two middle devices run their first F and B apart (less bubble),
    5. PP/2-k-1 times: B(other), then F(other)&B(own),
    6. k+1 times: B(other), B(own), the second half of these split into BI + W,
    7. PP/2-k-1 times: a deferred W, then BI(own),
    8. the remaining deferred W passes, oldest first.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

PassKind = Literal["F", "B", "BI", "W"]
SCHEDULES = ("1f1b", "zb1p", "dualpipe")


class ScheduleError(ValueError):
    """A schedule cannot be built for these sizes; the message names the argument."""


@dataclasses.dataclass(frozen=True)
class Pass:
    kind: PassKind
    micro_batch: int
    direction: int = 0  # 0: enters at device 0; 1: DualPipe's reverse copy, enters at the last device


@dataclasses.dataclass(frozen=True)
class Op:
    """What one device runs at once: one pass, or DualPipe's overlapped forward + backward."""
    passes: tuple[Pass, ...]

    @property
    def label(self) -> str:
        return "&".join(p.kind for p in self.passes)


@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    pipeline_parallel_size: int
    num_micro_batches: int           # in all, both directions together for DualPipe
    device_ops: tuple[tuple[Op, ...], ...]
    parameter_copies: int            # model copies held across the pipeline (DualPipe: 2)

    @property
    def directions(self) -> int:
        return self.parameter_copies

    def stage_of(self, device: int, direction: int) -> int:
        """Pipeline stage (0 = input end) that `device` holds for `direction`."""
        return device if direction == 0 else self.pipeline_parallel_size - 1 - device


def _single(kind: PassKind, micro_batch: int, direction: int = 0) -> Op:
    return Op((Pass(kind, micro_batch, direction),))


def _check_sizes(pp: int, m: int) -> None:
    if not isinstance(pp, int) or pp < 1:
        raise ScheduleError(f"pipeline_parallel_size must be a positive integer, got {pp!r}")
    if not isinstance(m, int) or m < 1:
        raise ScheduleError(f"num_micro_batches must be a positive integer, got {m!r}")


def one_f_one_b(pp: int, m: int) -> Schedule:
    _check_sizes(pp, m)
    devices = []
    for d in range(pp):
        warmup = min(pp - 1 - d, m)
        ops = [_single("F", i) for i in range(warmup)]
        for i in range(m - warmup):
            ops += [_single("F", warmup + i), _single("B", i)]
        ops += [_single("B", i) for i in range(m - warmup, m)]
        devices.append(tuple(ops))
    return Schedule("1f1b", pp, m, tuple(devices), parameter_copies=1)


def zero_bubble_h1(pp: int, m: int) -> Schedule:
    """ZB-H1: in its steady state device i runs F(x), BI(x-(pp-1-i)), W(x-(pp-1))."""
    _check_sizes(pp, m)
    if m < pp:
        raise ScheduleError(f"zb1p needs num_micro_batches >= pipeline_parallel_size ({pp}), got {m}")
    devices = []
    for i in range(pp):
        f = b = w = 0
        ops = []

        def add(kind):
            nonlocal f, b, w
            index = {"F": f, "BI": b, "W": w}[kind]
            ops.append(_single(kind, index))
            f, b, w = f + (kind == "F"), b + (kind == "BI"), w + (kind == "W")

        for _ in range(pp - 1 - i):           # warm-up forwards, as 1F1B
            add("F")
        for _ in range(i):                    # F + BI: these W passes wait for the cool-down
            add("F"), add("BI")
        for _ in range(m - pp + 1):           # steady state
            add("F"), add("BI"), add("W")
        for _ in range(pp - 1 - i):           # cool-down: the remaining backwards
            add("BI"), add("W")
        for _ in range(i):                    # the deferred weight passes fill the end
            add("W")
        devices.append(tuple(ops))
    return Schedule("zb1p", pp, m, tuple(devices), parameter_copies=1)


def dualpipe(pp: int, m: int) -> Schedule:
    _check_sizes(pp, m)
    if pp % 2:
        raise ScheduleError(f"dualpipe needs an even pipeline_parallel_size, got {pp}")
    if m % 2 or m < 2 * pp:
        raise ScheduleError(f"dualpipe needs an even num_micro_batches >= 2 x pipeline_parallel_size "
                            f"({2 * pp}), got {m}")
    half = pp // 2
    per_direction = m // 2
    devices = []
    for d in range(pp):
        k = min(d, pp - 1 - d)
        own = 0 if d < half else 1            # the direction whose first stage is nearer
        other = 1 - own
        middle = k == half - 1
        next_f, next_b = [0, 0], [0, 0]
        pending_w: list[Pass] = []             # FIFO of weight passes split off by BI
        ops: list[Op] = []

        def fwd(direction) -> Pass:
            p = Pass("F", next_f[direction], direction)
            next_f[direction] += 1
            return p

        def bwd(direction, split=False) -> Pass:
            p = Pass("BI" if split else "B", next_b[direction], direction)
            next_b[direction] += 1
            if split:
                pending_w.append(Pass("W", p.micro_batch, direction))
            return p

        def run(*passes):
            ops.append(Op(tuple(passes)))

        def weight():
            run(pending_w.pop(0))

        for _ in range(2 * (half - k - 1)):                      # 1
            run(fwd(own))
        for _ in range(k + 1):                                   # 2
            run(fwd(own))
            run(fwd(other))
        for _ in range(half - k - 1):                            # 3
            run(bwd(other, split=True))
            weight()
            run(fwd(other))
        for i in range(per_direction - pp + k + 1):              # 4
            if i == 0 and middle:
                run(fwd(own))
                run(bwd(other))
            else:
                run(fwd(own), bwd(other))
            run(fwd(other), bwd(own))
        for _ in range(half - k - 1):                            # 5
            run(bwd(other))
            run(fwd(other), bwd(own))
        steps = k + 1                                            # 6
        for i in range(steps):
            run(bwd(other, split=i > steps // 2 or (i == steps // 2 and k % 2 == 1)))
            run(bwd(own, split=i >= steps // 2))
        for _ in range(half - k - 1):                            # 7
            weight()
            run(bwd(own, split=True))
        while pending_w:                                         # 8
            weight()
        devices.append(tuple(ops))
    return Schedule("dualpipe", pp, m, tuple(devices), parameter_copies=2)


def build_schedule(name: str, pipeline_parallel_size: int, num_micro_batches: int) -> Schedule:
    builders = {"1f1b": one_f_one_b, "zb1p": zero_bubble_h1, "dualpipe": dualpipe}
    if name not in builders:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return builders[name](pipeline_parallel_size, num_micro_batches)
