"""Per-layer costs (FLOPs roofline and measured JSON) and the step-time estimate."""

import json

import pytest

from model.config import ModelConfig
from model.flops import forward_flops_per_token
from stages.plan_commands import BUILTIN_COSTS
from stages.planning.costs import load_costs, piece_flops, roofline_costs
from stages.planning.devices import get_device
from stages.planning.layout import ParallelLayout, split_stages
from stages.planning.precision import get_recipe
from stages.planning.step_time import estimate_step, stage_piece_counts


@pytest.mark.parametrize("preset", ["tiny", "small", "v3-671b"])
def test_pieces_sum_to_model_flops(preset):
    cfg = ModelConfig.from_preset(preset)
    for seq in (256, 4096):
        f = piece_flops(cfg, seq)
        stages = split_stages(cfg, 1)
        counts = stage_piece_counts(cfg, stages[0])
        assert sum(n * f[p].forward for p, n in counts.items()) == pytest.approx(forward_flops_per_token(cfg, seq))


def test_roofline_chunk_times():
    cfg = ModelConfig.from_preset("v3-671b")
    costs = roofline_costs(cfg, 4096, 400.0, "test")
    f = piece_flops(cfg, 4096)
    fwd, bwd, w = costs.chunk({"attention": 4, "moe_mlp": 4}, 4096, "none")
    assert fwd == pytest.approx(4 * (f["attention"].forward + f["moe_mlp"].forward) * 4096 / 400e12)
    assert bwd == pytest.approx(2 * fwd)
    # W: the weight matrices' share; the attention core (scores, values) has none
    assert w == pytest.approx(4 * (f["attention"].weight_matmuls + f["moe_mlp"].forward) * 4096 / 400e12)
    assert w < bwd / 2
    _, bwd_sel, _ = costs.chunk({"attention": 4, "moe_mlp": 4}, 4096, "selective")
    _, bwd_full, _ = costs.chunk({"attention": 4, "moe_mlp": 4}, 4096, "full")
    assert bwd < bwd_sel < bwd_full == pytest.approx(bwd + fwd)


def test_measured_h200_costs_reproduce_the_benchmark_rates():
    cfg = ModelConfig.from_preset("small")
    costs = load_costs(BUILTIN_COSTS["h200-small"], cfg, 4096)
    assert not costs.estimate and "RESULTS.md" in costs.source
    f = piece_flops(cfg, 4096)
    tflops = {p: f[p].forward / costs.pieces[p].forward / 1e12 for p in ("moe_mlp", "attention", "head")}
    # benchmarks/RESULTS.md: experts ~205-230, attention ~310, head ~450 TFLOP/s
    assert 200 < tflops["moe_mlp"] < 240 and 290 < tflops["attention"] < 330 and 430 < tflops["head"] < 470


def test_costs_file_errors(tmp_path):
    cfg = ModelConfig.from_preset("small")
    bad = tmp_path / "c.json"
    for content, message in [("{", "not valid JSON"), ("{}", "'pieces'"),
                             (json.dumps({"pieces": {"mlp": {"tokens": 1, "forward_ms": 1}}}), "unknown piece"),
                             (json.dumps({"pieces": {"head": {"tokens": 1}}}), "forward_ms"),
                             (json.dumps({"seq_len": 1024, "pieces": {}}), "--seq-len")]:
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_costs(str(bad), cfg, 4096)
    with pytest.raises(FileNotFoundError, match="--costs"):
        load_costs(str(tmp_path / "missing.json"), cfg, 4096)


def _v3_step(schedule, recipe="deepseek-v3"):
    cfg = ModelConfig.from_preset("v3-671b")
    lay = ParallelLayout(num_gpus=2048, expert_parallel_size=64, pipeline_parallel_size=16, schedule=schedule)
    return estimate_step(cfg, lay, get_recipe(recipe), get_device("h800"), roofline_costs(cfg, 4096, 400.0, "t"))


def test_dualpipe_hides_the_all_to_all():
    dual, one = _v3_step("dualpipe"), _v3_step("1f1b")
    assert max(dual.exposed_comm) < 0.25 * max(one.exposed_comm)
    assert dual.step_seconds < one.step_seconds
    assert dual.step_seconds == pytest.approx(dual.pipeline_seconds + dual.data_parallel_seconds)
    assert dual.tokens_per_second == pytest.approx(15360 * 4096 / dual.step_seconds)
    # every rank computes the same work: busy time x ranks + idle = makespan x ranks
    t = dual.timeline
    assert sum(t.busy(d) for d in range(16)) + sum(dual.bubbles) == pytest.approx(16 * t.makespan)
    assert 0 < dual.bubble_share < 0.2 and 0.1 < dual.mfu < 0.5
