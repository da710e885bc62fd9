"""Pipeline schedules: the simulated timelines reproduce the DeepSeek-V3 paper's Table 2
(bubble, activations, parameter copies) and obey the dependencies they simulate."""

import itertools
import random

import pytest

from stages.planning.schedules import Op, Pass, Schedule, ScheduleError, build_schedule, dualpipe
from stages.planning.timeline import StageCosts, simulate

GRID = [(pp, m) for pp in (4, 8, 16) for m in (2 * pp, 4 * pp, 6 * pp, 10 * pp)]


def _close(a, b):
    return abs(a - b) < 1e-9 * max(1.0, abs(b))


@pytest.mark.parametrize("pp,m", GRID)
def test_1f1b_matches_table2(pp, m):
    # exact for any costs: every device idles (PP-1)(F+B); device d holds PP-d micro-batches at most
    for f, b, w in [(1.0, 2.0, 1.0), (1.3, 2.9, 0.4), (0.7, 1.1, 1.1)]:
        t = simulate(build_schedule("1f1b", pp, m), StageCosts(f, b, w))
        assert all(_close(x, (pp - 1) * (f + b)) for x in t.bubbles)
        assert t.peak_in_flight == [pp - d for d in range(pp)]
        assert max(t.peak_in_flight) == pp and t.schedule.parameter_copies == 1


@pytest.mark.parametrize("pp,m", GRID)
def test_zb1p_matches_table2(pp, m):
    # ZB-H1's bubble (PP-1)(F+B-2W) holds whenever W <= F and W <= B-W (the zero-bubble
    # paper's setting: a deferred W fits into the gap it fills); every device holds PP
    for f, b, w in [(1.0, 2.0, 1.0), (1.3, 2.1, 0.7), (1.0, 1.0, 0.3), (2.0, 3.0, 1.5)]:
        t = simulate(build_schedule("zb1p", pp, m), StageCosts(f, b, w))
        assert all(_close(x, (pp - 1) * (f + b - 2 * w)) for x in t.bubbles), t.bubbles
        assert t.peak_in_flight == [pp] * pp and t.schedule.parameter_copies == 1


@pytest.mark.parametrize("pp,m", GRID)
def test_dualpipe_matches_table2(pp, m):
    # (PP/2-1)(F&B+B-3W) is exact for Figure 5's cells: a forward as long as a backward
    # for inputs (F = B-W), W <= F, and an overlapped pair between F+(B-W) and F+B; it is
    # then the idle time of the busiest-waiting (middle) devices, the worst of all
    for f, w, fb in [(1.0, 1.0, 3.0), (1.0, 0.8, 2.5), (1.2, 0.5, 2.9), (1.0, 1.0, 2.0), (0.9, 0.3, 2.1)]:
        b = f + w
        t = simulate(dualpipe(pp, m), StageCosts(f, b, w, fb))
        formula = (pp / 2 - 1) * (fb + b - 3 * w)
        assert _close(max(t.bubbles), formula), (f, b, w, fb, t.bubbles)
        assert _close(t.bubbles[pp // 2 - 1], formula) and _close(t.bubbles[pp // 2], formula)
        assert t.peak_in_flight == [pp + 1] * pp
        assert t.schedule.parameter_copies == 2


def test_dualpipe_random_costs_within_the_formula_setting():
    rng = random.Random(0)
    for _ in range(40):
        f = rng.uniform(0.5, 2.0)
        w = rng.uniform(0.05, f)
        fb = rng.uniform(2 * f, 2 * f + w)
        pp = rng.choice([4, 8, 16])
        m = pp * rng.choice([2, 3, 5])
        t = simulate(dualpipe(pp, m), StageCosts(f, f + w, w, fb))
        assert _close(max(t.bubbles), (pp / 2 - 1) * (fb + f + w - 3 * w))


def test_dualpipe_outside_the_setting_differs_and_the_simulation_says_so():
    # W > F: the formula no longer describes the timeline; the simulation is the answer
    t = simulate(dualpipe(8, 32), StageCosts(1.0, 2.2, 1.2, 3.0))
    assert not _close(max(t.bubbles), 3 * (3.0 + 2.2 - 3.6))


def test_dualpipe_phases_follow_the_official_step_counts():
    pp, m = 8, 20
    s = dualpipe(pp, m)
    half, chunks = pp // 2, m // 2
    for d, ops in enumerate(s.device_ops):
        k = min(d, pp - 1 - d)
        pairs = [op for op in ops if len(op.passes) == 2]
        # step 4 runs 2 pairs per iteration (the middle ranks' first F and B apart), step 5 one
        expected = 2 * (chunks - pp + k + 1) + (half - k - 1) - (1 if k == half - 1 else 0)
        assert len(pairs) == expected
        leading = [op for op in itertools.takewhile(lambda o: o.label == "F", ops)]
        assert len(leading) >= 2 * (half - k - 1) + 2 * (k + 1) - 1
        passes = [p for op in ops for p in op.passes]
        for direction in (0, 1):
            fs = [p.micro_batch for p in passes if p.kind == "F" and p.direction == direction]
            bs = [p.micro_batch for p in passes if p.kind in ("B", "BI") and p.direction == direction]
            ws = [p.micro_batch for p in passes if p.kind == "W" and p.direction == direction]
            splits = [p.micro_batch for p in passes if p.kind == "BI" and p.direction == direction]
            assert fs == list(range(chunks)) and bs == list(range(chunks))
            assert sorted(ws) == sorted(splits)


@pytest.mark.parametrize("name", ["1f1b", "zb1p", "dualpipe"])
def test_timeline_respects_dependencies(name):
    pp, m, hop = 8, 32, 0.25
    s = build_schedule(name, pp, m)
    t = simulate(s, StageCosts(1.0, 2.1, 0.9, 2.6), p2p_time=hop)
    end = {}
    for ops in t.ops:
        previous = 0.0
        for op in ops:
            assert op.start >= previous - 1e-12  # one op at a time per device
            previous = op.end
            for p, stage in zip(op.op.passes, op.stages):
                end[(p.kind, p.micro_batch, p.direction, stage)] = (op.start, op.end)
    for (kind, mb, direction, stage), (start, _) in end.items():
        if kind == "F" and stage > 0:
            assert start >= end[("F", mb, direction, stage - 1)][1] + hop - 1e-9
        if kind in ("B", "BI") and stage < pp - 1:
            up = end.get(("B", mb, direction, stage + 1)) or end[("BI", mb, direction, stage + 1)]
            assert start >= up[1] + hop - 1e-9
        if kind == "W":
            assert start >= end[("BI", mb, direction, stage)][1] - 1e-9
    # every pass of every micro-batch ran once on every stage
    forwards = [k for k in end if k[0] == "F"]
    assert len(forwards) == m * pp


def test_schedule_errors_name_the_argument():
    with pytest.raises(ScheduleError, match="even pipeline_parallel_size"):
        build_schedule("dualpipe", 5, 20)
    with pytest.raises(ScheduleError, match="num_micro_batches >= 2 x pipeline_parallel_size"):
        build_schedule("dualpipe", 8, 12)
    with pytest.raises(ScheduleError, match="num_micro_batches >= pipeline_parallel_size"):
        build_schedule("zb1p", 8, 4)
    with pytest.raises(ScheduleError, match="unknown schedule"):
        build_schedule("gpipe", 4, 8)
    with pytest.raises(ValueError, match="weight .* cannot exceed"):
        StageCosts(1.0, 1.0, 2.0)


def test_a_schedule_that_cannot_run_is_reported():
    # device 0 runs its backward before its forward: it waits on device 1, which waits on it
    ops = ((Op((Pass("B", 0),)), Op((Pass("F", 0),))), (Op((Pass("F", 0),)), Op((Pass("B", 0),))))
    with pytest.raises(ScheduleError, match="deadlocks; waiting: device 0: B; device 1: F"):
        simulate(Schedule("bad", 2, 1, ops, parameter_copies=1), StageCosts(1.0, 2.0, 1.0))
