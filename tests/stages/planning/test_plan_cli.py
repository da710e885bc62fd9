"""`seekforge plan`: the table, JSON, the timeline picture and bad-input errors."""

import json
import struct

import pytest

from stages.cli import main
from stages.planning.picture import blocks, draw_timeline
from stages.planning.schedules import build_schedule
from stages.planning.timeline import StageCosts, simulate

PAPER = ["plan", "v3-671b", "--gpus", "2048", "--ep", "64", "--pp", "16", "--dp", "auto", "--zero", "1",
         "--schedule", "dualpipe", "--device", "h800"]
TINY = ["plan", "tiny", "--gpus", "8", "--ep", "4", "--pp", "2", "--seq-len", "256", "--global-batch", "32",
        "--schedule", "1f1b"]


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_paper_layout_table(capsys):
    assert main(PAPER) == 0
    out = capsys.readouterr().out
    assert "2048 x H800 80GB" in out and "EP 64 (8 nodes x 8 GPUs, 4 routed experts per GPU)" in out
    assert "x PP 16 x DP 128 (routed experts: 2 replicas), TP 1, ZeRO-1" in out
    assert "120 micro-batches" in out and "2 parameter copies" in out
    assert ": fits (" in out and "NO" not in out
    assert "peak in flight 17 micro-batch-stages (Table 2: 17)" in out
    assert "(PP/2-1)(F&B+B-3W)" in out
    assert "node-limited (<= 4 nodes)" in out and "naive (8 copies)" in out
    assert "tokens/s" in out and "ESTIMATE" in out
    assert "576 values per token per layer" in out


def test_json_output(capsys):
    assert main(PAPER + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["memory"]["fits"] is True
    assert data["layout"]["data_parallel_size"] == 128 and data["expert_data_parallel_size"] == 2
    assert data["pipeline"]["parameter_copies"] == 2 and max(data["pipeline"]["peak_in_flight"]) == 17
    a2a = data["all_to_all"]
    assert a2a["naive"]["per_step"]["ib"] == pytest.approx(2 * a2a["node_limited"]["per_step"]["ib"])
    assert data["step"]["step_seconds"] > 0 and data["step"]["estimate"] is True


def test_plain_recipe_does_not_fit(capsys):
    assert main(PAPER + ["--recipe", "bf16-fp32-adam"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and " NO" in out
    assert main(PAPER + ["--recipe", "bf16-fp32-adam", "--recompute"]) == 0
    assert "recompute full" in capsys.readouterr().out


def test_measured_costs(capsys):
    assert main(["plan", "small", "--gpus", "16", "--ep", "8", "--pp", "2", "--global-batch", "64",
                 "--costs", "h200-small", "--device", "h200"]) == 0
    out = capsys.readouterr().out
    assert "from measured costs" in out and "RESULTS.md" in out


def test_timeline_picture(tmp_path, capsys):
    path = tmp_path / "timeline.png"
    assert main(TINY + ["--timeline", str(path)]) == 0
    assert f"timeline picture: {path}" in capsys.readouterr().out
    width, height = _png_size(path)
    assert width >= 800 and height >= 200 and path.stat().st_size > 10_000


def test_picture_draws_the_simulated_passes(tmp_path):
    t = simulate(build_schedule("dualpipe", 4, 8), StageCosts(1.0, 2.0, 1.0, 2.5))
    drawn = draw_timeline(t, str(tmp_path / "dp.png"))
    assert drawn == blocks(t)
    passes = [(op.device, p.kind, p.micro_batch, p.direction, op.start, op.end)
              for ops in t.ops for op in ops for p in op.op.passes]
    assert len(drawn) == len(passes)
    for ops in t.ops:
        for op in ops:
            mine = [b for b in drawn if b.device == op.device and op.start <= b.start and b.end <= op.end]
            assert len(mine) == len(op.op.passes)
            assert min(b.start for b in mine) == op.start and max(b.end for b in mine) == op.end
            assert all(b.paired == (len(op.op.passes) == 2) for b in mine)
    width, height = _png_size(tmp_path / "dp.png")
    assert width > 600 and height > 150


@pytest.mark.parametrize("change,flag", [
    (["--gpus", "2000"], "--gpus"),
    (["--ep", "512"], "--ep"),
    (["--ep", "48"], "--ep"),
    (["--pp", "64", "--gpus", "4096"], "--pp"),
    (["--dp", "100"], "--dp"),
    (["--dp", "many"], "--dp"),
    (["--pp", "15", "--ep", "64", "--gpus", "1920", "--global-batch", "15360"], "--pp"),
    (["--global-batch", "15000"], "--global-batch"),
    (["--micro-batches", "30", "--global-batch", "3840"], "--micro-batches"),
    (["--costs", "/nonexistent/costs.json"], "--costs"),
    (["--mfu", "1.5"], "--mfu"),
    (["--timeline", "/nonexistent/dir/x.png"], "--timeline"),
])
def test_bad_input_names_the_flag(change, flag, capsys):
    argv = list(PAPER)
    for i in range(0, len(change), 2):
        if change[i] in argv:
            argv[argv.index(change[i]) + 1] = change[i + 1]
        else:
            argv += change[i:i + 2]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("seekforge: error:") and flag in err, err


def test_unknown_preset(capsys):
    assert main(["plan", "v4", "--gpus", "8"]) == 2
    assert "neither a preset" in capsys.readouterr().err
