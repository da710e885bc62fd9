"""All-to-all, data-parallel and pipeline volumes against hand computations."""

import dataclasses

import pytest

from model.config import ModelConfig, count_parameters
from stages.planning.communication import (data_parallel_sync, expert_all_to_all, max_nodes_per_token,
                                           pipeline_sends)
from stages.planning.layout import ParallelLayout
from stages.planning.precision import FP8_TILE, get_recipe

V3 = ModelConfig.from_preset("v3-671b")
PAPER = ParallelLayout(num_gpus=2048, expert_parallel_size=64, pipeline_parallel_size=16, zero_stage=1,
                       schedule="dualpipe")


def test_v3_all_to_all_by_hand():
    recipe = get_recipe("deepseek-v3")
    h, tokens = 7168, 4096
    # 8 experts per token over 8 nodes of 8 GPUs; node-limited to 4 nodes (topk_group 4 of 8 groups)
    assert max_nodes_per_token(V3, PAPER) == 4
    naive = expert_all_to_all(V3, PAPER, recipe, node_limited=False)
    limited = expert_all_to_all(V3, PAPER, recipe, node_limited=True)
    # naive: 7/8 of the 8 copies leave the node; 1/8 stay, of which 7/8 go to another GPU
    assert (naive.copies.ib, naive.copies.nvlink) == (7.0, 1.0 * 7 / 8)
    # node-limited: one IB copy per target node other than the own (4 x 7/8), then every
    # copy but those landing on the receiving GPU crosses NVLink (8 x 7/8)
    assert (limited.copies.ib, limited.copies.nvlink) == (3.5, 7.0)
    # per token per MoE layer, forward: dispatch in FP8 (with 1x128 scales), combine in BF16
    assert limited.per_token_layer_forward.ib == pytest.approx(3.5 * h * (FP8_TILE + 2))
    assert limited.per_token_layer.ib == pytest.approx(2 * 3.5 * h * (FP8_TILE + 2))  # + backward
    assert naive.per_token_layer.ib == pytest.approx(2 * limited.per_token_layer.ib)
    # per step: rank d holds stages d and 15-d: 4 + 4 MoE layers, 60 micro-batches through each
    assert limited.moe_layer_passes_per_step == 8 * 60
    assert limited.per_step.ib == pytest.approx(2 * 3.5 * h * (FP8_TILE + 2) * tokens * 480)
    assert 290e9 < limited.per_step.ib < 310e9


def test_single_node_ep_has_no_ib_traffic():
    small = ModelConfig.from_preset("small")
    lay = ParallelLayout(num_gpus=8, expert_parallel_size=8, pipeline_parallel_size=1, schedule="1f1b",
                         global_batch_size=64)
    a = expert_all_to_all(small, lay, get_recipe("bf16-fp32-adam"))
    assert a.copies.ib == 0.0
    assert a.copies.nvlink == pytest.approx(6 * 7 / 8)          # 6 experts per token, 1/8 local
    assert a.per_token_layer.nvlink == pytest.approx(4 * 6 * 7 / 8 * 1024 * 2)   # 4 all-to-alls, BF16


def test_data_parallel_sync_by_hand():
    cfg = ModelConfig.from_preset("tiny")
    lay = ParallelLayout(num_gpus=16, expert_parallel_size=4, pipeline_parallel_size=1, schedule="1f1b",
                         seq_len=256, global_batch_size=64)
    # PP 1: every parameter on every device; non-expert replicas 16, experts 16 / 4 = 4
    routed = cfg.num_moe_layers * 16 * 3 * 256 * 128 + 16 * 3 * 256 * 128          # + the MTP's MoE block
    counts = count_parameters(cfg)
    non_expert = counts["total"] + counts["mtp"] - routed
    grads = non_expert * 15 / 16 + routed / 4 * 3 / 4
    for zero, recipe in [(0, "bf16-fp32-adam"), (1, "deepseek-v3"), (3, "deepseek-v3")]:
        r = get_recipe(recipe)
        s = data_parallel_sync(cfg, dataclasses.replace(lay, zero_stage=zero), r, device=0)
        assert (s.non_expert_replicas, s.expert_replicas) == (16, 4)
        if zero == 0:
            assert s.gradient_bytes == pytest.approx(2 * grads * r.grad_bytes) and s.weight_bytes == 0
        elif zero == 1:
            assert s.gradient_bytes == pytest.approx(grads * 4) and s.weight_bytes == pytest.approx(grads * 2)
        else:  # gathered before every micro-batch's forward and backward: 4 micro-batches of 1 sequence
            assert s.weight_bytes == pytest.approx(2 * 4 * grads * 2)


def test_pipeline_sends_by_hand():
    recipe = get_recipe("deepseek-v3")
    s = pipeline_sends(V3, PAPER, recipe, device=3)
    assert s.bytes_per_hop == 4096 * 7168 * 2
    # rank 3 holds stages 3 and 12: each sends activations forward and gradients back, 60 micro-batches each
    assert s.bytes_per_step == 4096 * 7168 * 2 * 4 * 60
    end = pipeline_sends(V3, PAPER, recipe, device=0)           # stages 0 and 15: one send each way
    assert end.bytes_per_step == 4096 * 7168 * 2 * 2 * 60
