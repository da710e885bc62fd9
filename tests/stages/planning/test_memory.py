"""Memory per device against a hand computation, and the paper's v3-671b layout."""

import pytest

from model.config import ModelConfig, count_parameters
from stages.planning.devices import GIB
from stages.planning.layout import LayoutError, ParallelLayout, split_stages
from stages.planning.memory import all_stage_parameters, kv_cache_bytes, memory_plan
from stages.planning.precision import FP8_TILE, get_recipe

# two layers (one dense, one MoE) and one MTP module, small enough to count by hand
SMALL = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                    num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2, q_lora_rank=16,
                    kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8,
                    n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                    max_position_embeddings=256, num_nextn_predict_layers=1)

# by hand, PyTorch [out, in] shapes:
ATTENTION = (16 * 32          # q_a_proj
             + 16             # q_a_layernorm
             + 2 * 16 * 16    # q_b_proj: heads x (8 + 8) x q_lora
             + (16 + 8) * 32  # kv_a_proj_with_mqa
             + 16             # kv_a_layernorm
             + 2 * 16 * 16    # kv_b_proj: heads x (nope 8 + v 8) x kv_lora
             + 32 * 16        # o_proj
             + 2 * 32)        # the two layer norms
assert ATTENTION == 2912
EXPERT = 3 * 32 * 16
DENSE_LAYER = ATTENTION + 3 * 32 * 64
MOE_NON_EXPERT = ATTENTION + 8 * 32 + EXPERT        # + router gate + shared expert
MOE_EXPERTS = 8 * EXPERT
MTP_OWN = 32 + 32 + 32 * 64 + 32                    # enorm, hnorm, eh_proj, shared_head.norm
EMBED = 128 * 32


def _layout(**kw):
    base = dict(num_gpus=16, expert_parallel_size=4, pipeline_parallel_size=2, zero_stage=1, micro_batch_size=1,
                seq_len=64, global_batch_size=64, schedule="1f1b")
    base.update(kw)
    return ParallelLayout(**base)


def test_parameter_split_by_hand():
    stages = split_stages(SMALL, 2)
    # 2 decoder layers + 1 MTP = 3 units over 2 stages: the first stage (embedding) gets the smaller share
    assert [(s.first_layer, s.num_layers, s.mtp_modules) for s in stages] == [(0, 1, 0), (1, 1, 1)]
    p0, p1 = all_stage_parameters(SMALL, _layout())
    assert (p0.non_expert, p0.experts) == (EMBED + DENSE_LAYER, 0)
    # last stage: MoE layer, MTP (own + a MoE block), final norm, head, and an embedding copy for
    # the MTP input (1F1B: no device holds both ends)
    assert p1.non_expert == MOE_NON_EXPERT + MTP_OWN + MOE_NON_EXPERT + 32 + EMBED + EMBED
    assert p1.experts == 2 * MOE_EXPERTS and p1.buffers == 2 * 8
    # DualPipe holds both ends on one device: no copy
    assert all_stage_parameters(SMALL, _layout(schedule="dualpipe", global_batch_size=32))[1].non_expert == \
        p1.non_expert - EMBED
    # every trainable checkpoint tensor is in some stage (MTP's shared embedding/head copies excepted)
    total = sum(p.non_expert + p.experts for p in all_stage_parameters(SMALL, _layout(schedule="dualpipe",
                                                                                        global_batch_size=32)))
    assert total == count_parameters(SMALL)["total"] + count_parameters(SMALL)["mtp"]


def test_states_by_hand_zero1_deepseek_recipe():
    lay = _layout()
    plan = memory_plan(SMALL, lay, "deepseek-v3", "h800")
    d1 = plan.devices[1]
    non_expert = MOE_NON_EXPERT * 2 + MTP_OWN + 32 + 2 * EMBED
    experts = 2 * MOE_EXPERTS // 4                   # EP 4
    assert d1.parameters == non_expert + experts
    assert d1.weights == (non_expert + experts) * 2 + 16 * 4        # BF16 + FP32 router biases
    assert d1.gradients == (non_expert + experts) * 4               # FP32 gradients, not sharded at ZeRO-1
    # master (4) + two BF16 moments (2 + 2), sharded over DP 8 (non-expert) and 16 / (2 x 4) = 2 (experts)
    assert d1.optimizer_states == pytest.approx(non_expert / 8 * 8 + experts / 2 * 8)


@pytest.mark.parametrize("zero", [0, 2, 3])
def test_zero_levels_by_hand(zero):
    d0 = memory_plan(SMALL, _layout(zero_stage=zero), "bf16-fp32-adam", "h800").devices[0]
    n = EMBED + DENSE_LAYER                          # stage 0: no experts, 8 replicas
    opt = n * 12
    assert d0.optimizer_states == pytest.approx(opt if zero == 0 else opt / 8)
    assert d0.gradients == pytest.approx(n * 2 / 8 if zero >= 2 else n * 2)
    if zero == 3:
        assert d0.weights == pytest.approx(n * 2 / 8 + DENSE_LAYER * 2)   # shard + one gathered layer
    else:
        assert d0.weights == n * 2


def _moe_layer_bytes_deepseek():
    """Per token, the V3 recipe (selective recompute, FP8 caching), by hand."""
    kept = 2 * (32 + 16 + 16 + 8 + 32)               # x, q_a out, latent, rope key, residual: BF16
    stats = 4 * (4 + 2 + 8 + 2 * 2)                  # 4 rstd, 2 heads' logsumexp, 8 scores, top-2 ids + weights
    attention_out = 1.5 * 2 * 8                      # E5M6
    fp8 = FP8_TILE * (2 * 32 + 2 * 2 * 16 + 2 * 16)  # dispatched K x H, experts' gate+up, shared gate+up
    return kept + stats + attention_out + fp8


def _moe_layer_bytes_plain():
    """Per token, every tensor the backward reads, BF16 (FP32 stats)."""
    bf16 = (32 + 32 + 16 + 16 + 16 + 8 + 16 + 2 * 2 * 16 + 2 * 8 + 2 * 8 + 32 + 32   # attention block
            + 2 * 32 + 2 * 2 * 16 + 2 * 16 + 2 * 32 + 2 * 16 + 16)                   # MoE: dispatched, gate/up,
    stats = 4 * (4 + 2 + 8 + 4)                                                      # act, expert outs, shared
    return 2 * bf16 + stats


def test_activation_bytes_by_hand():
    lay = _layout()
    tokens = 64
    v3 = memory_plan(SMALL, lay, "deepseek-v3", "h800")
    plain = memory_plan(SMALL, lay, "bf16-fp32-adam", "h800")
    # 1F1B, PP 2: rank 0 holds 2 micro-batches in flight, rank 1 holds 1 (stage 1: MoE layer + MTP + head)
    assert [d.peak_in_flight for d in v3.devices] == [2, 1]
    head = 2 * 32 + 4 + 2 * 128                      # final-norm input, rstd, logits (BF16)
    head_v3 = head                                   # norm output recomputed
    head_plain = head + 2 * 32
    mtp_v3 = 2 * 32 + 4 + 4 + head_v3                # enorm input, two rstd, its head; eh_proj input recomputed
    mtp_plain = 2 * 32 + 4 + 4 + 2 * 64 + head_plain
    stage1_v3 = _moe_layer_bytes_deepseek() * 2 + head_v3 + mtp_v3
    stage1_plain = _moe_layer_bytes_plain() * 2 + head_plain + mtp_plain
    assert v3.devices[1].activations == pytest.approx(stage1_v3 * tokens)
    assert plain.devices[1].activations == pytest.approx(stage1_plain * tokens)
    assert plain.devices[1].activations > 2 * v3.devices[1].activations


def test_recompute_orders_activation_memory():
    lay = _layout()
    recipe = get_recipe("bf16-fp32-adam")
    acts = [memory_plan(SMALL, lay, recipe.with_recompute(r), "h800").devices[0].activations
            for r in ("none", "selective", "full")]
    assert acts[0] > acts[1] > acts[2]
    full = memory_plan(SMALL, lay, recipe.with_recompute("full"), "h800").devices[0]
    assert full.activations == pytest.approx(2 * (32 * 2 + 4) * 64)   # 2 in flight x (layer input + token ids)


def test_paper_layout_fits_80gb():
    """V3 §3.2: 2048 H800s, EP64 over 8 nodes, PP16, ZeRO-1 DP (128 for non-expert parts), DualPipe."""
    cfg = ModelConfig.from_preset("v3-671b")
    lay = ParallelLayout(num_gpus=2048, expert_parallel_size=64, pipeline_parallel_size=16, zero_stage=1,
                         schedule="dualpipe")
    assert (lay.data_parallel_size, lay.expert_data_parallel_size, lay.ep_nodes, lay.num_micro_batches) == \
        (128, 2, 8, 120)
    plan = memory_plan(cfg, lay, "deepseek-v3", "h800")
    assert plan.fits, [round(d.total / GIB, 1) for d in plan.devices]
    assert all(d.peak_in_flight == 17 for d in plan.devices)          # PP + 1
    # every rank holds two stages; routed experts: 4 per GPU per MoE layer
    assert plan.devices[1].expert_parameters == 8 * 4 * 3 * 7168 * 2048
    # the plain recipe without recomputation does not fit
    assert not memory_plan(cfg, lay, "bf16-fp32-adam", "h800").fits
    row = plan.devices[3].as_dict()
    assert row["fits"] and row["total"] == pytest.approx(sum(row[k] for k in (
        "weights", "gradients", "optimizer_states", "activations", "workspace", "reserved")))


def test_layout_errors_name_the_flag():
    cfg = ModelConfig.from_preset("v3-671b")
    cases = [(dict(num_gpus=2000), "--gpus"), (dict(expert_parallel_size=512), "--ep"),
             (dict(expert_parallel_size=48), "--ep"), (dict(pipeline_parallel_size=64, num_gpus=4096), "--pp"),
             (dict(data_parallel_size=64), "--dp"), (dict(global_batch_size=15361), "--global-batch"),
             (dict(num_micro_batches=100), "--micro-batches"), (dict(zero_stage=4), "--zero"),
             (dict(tensor_parallel_size=2), "--tp"), (dict(schedule="dualpipe", pipeline_parallel_size=8,
                                                          global_batch_size=256 * 14), "--micro-batches")]
    for change, flag in cases:
        fields = dict(num_gpus=2048, expert_parallel_size=64, pipeline_parallel_size=16)
        fields.update(change)
        with pytest.raises(LayoutError, match=flag):
            ParallelLayout(**fields).validate(cfg)


def test_kv_cache_576_values_per_token_per_layer():
    cfg = ModelConfig.from_preset("v3-671b")
    assert kv_cache_bytes(cfg, tokens=1) == 576 * 61 * 2
