"""The plan as readable text: what `seekforge plan` prints."""

from __future__ import annotations

from stages.planning.devices import GIB
from stages.planning.plan import Plan

_DTYPES = {1: "FP8", 1.5: "E5M6", 2: "BF16", 4: "FP32"}


def _dtype(nbytes: float) -> str:
    return _DTYPES.get(nbytes, "FP8" if nbytes < 1.1 else f"{nbytes:g} B")


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _time(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _stage_line(plan: Plan) -> str:
    parts, i, stages = [], 0, plan.stages
    while i < len(stages):
        j = i
        while (j + 1 < len(stages) and stages[j + 1].num_layers == stages[i].num_layers
               and not (stages[j + 1].embedding or stages[j + 1].head or stages[i].embedding or stages[i].head)):
            j += 1
        s = stages[i]
        extra = (" + embedding" if s.embedding else "") + (f" + {s.mtp_modules} MTP" if s.mtp_modules else "") \
            + (" + head" if s.head else "")
        if j > i:
            parts.append(f"{i}-{j}: {s.num_layers} layers each")
        else:
            last = s.first_layer + s.num_layers - 1
            parts.append(f"{i}: layers {s.first_layer}-{last}{extra}" if s.num_layers else f"{i}:{extra}")
        i = j + 1
    return " | ".join(parts)


def format_plan(plan: Plan) -> str:
    cfg, lay, prec, dev, mem, step = plan.config, plan.layout, plan.precision, plan.device, plan.memory, plan.step
    cap = dev.memory_bytes / GIB
    lines = [f"seekforge plan {plan.name}: {lay.num_gpus} x {dev.name} ({cap:.1f} GiB each)"]
    experts_per_gpu = cfg.n_routed_experts // lay.expert_parallel_size
    lines.append(f"  layout    EP {lay.expert_parallel_size} ({_n(lay.ep_nodes, 'node')} x {lay.ep_gpus_per_node} GPUs, "
                 f"{experts_per_gpu} routed experts per GPU) x PP {lay.pipeline_parallel_size} x DP "
                 f"{lay.data_parallel_size} (routed experts: {_n(lay.expert_data_parallel_size, 'replica')}), TP 1, "
                 f"ZeRO-{lay.zero_stage}")
    lines.append(f"  schedule  {lay.schedule}: {lay.num_micro_batches} micro-batches of {lay.micro_batch_size} x "
                 f"{lay.seq_len} tokens per pipeline (global batch {lay.global_batch_size}), "
                 f"{lay.parameter_copies} parameter cop{'ies' if lay.parameter_copies > 1 else 'y'}")
    lines.append(f"  recipe    {prec.name}: weights {_dtype(prec.weight_bytes)}, gradients {_dtype(prec.grad_bytes)}, "
                 f"master {_dtype(prec.master_bytes)}, AdamW moments {_dtype(prec.moment_bytes)}; linear inputs "
                 f"cached in {_dtype(prec.linear_input_bytes)}, recompute {prec.recompute}")
    lines.append(f"  stages    {_stage_line(plan)}")
    if lay.schedule == "dualpipe":
        lines.append(f"            (DualPipe: rank d holds stage d of one copy and stage {lay.pipeline_parallel_size - 1}-d "
                     "of the other)")

    lines.append("")
    lines.append(f"memory per device, GiB (fits in {cap:.1f} GiB?)")
    header = (f"  {'ranks':>7} {'stages':>7} {'params':>7} {'weights':>8} {'grads':>6} {'optim':>6} "
              f"{'activ.':>7} {'in flight':>9} {'work':>5} {'resv':>5} {'total':>6}  fits")
    lines.append(header)
    rows, previous = [], None
    for d in mem.devices:
        key = tuple(round(x / GIB, 2) for x in (d.weights, d.gradients, d.optimizer_states, d.activations,
                                                d.workspace)) + (d.parameters,)
        if previous is not None and key == previous[0]:
            rows[-1][1] = d
        else:
            rows.append([d, d])
        previous = (key, d)
    for first, last in rows:
        d = first
        ranks = f"{first.device}" if first is last else f"{first.device}-{last.device}"
        if first is last:
            stages = "+".join(str(s) for s in d.stages)
        else:
            stages = f"d+{lay.pipeline_parallel_size - 1}-d" if len(d.stages) == 2 else "d"
        lines.append(f"  {ranks:>7} {stages:>7} {d.parameters / 1e9:6.2f}B {d.weights / GIB:8.1f} "
                     f"{d.gradients / GIB:6.1f} {d.optimizer_states / GIB:6.1f} {d.activations / GIB:7.1f} "
                     f"{d.peak_in_flight:9.0f} {d.workspace / GIB:5.1f} {d.reserved / GIB:5.1f} "
                     f"{d.total / GIB:6.1f}  {'yes' if d.fits else 'NO'}")
    worst = mem.largest
    verdict = "fits" if mem.fits else "does NOT fit"
    lines.append(f"  largest: rank {worst.device}, {worst.total / GIB:.1f} GiB of {cap:.1f}: {verdict} "
                 f"({(worst.capacity - worst.total) / GIB:+.1f} GiB headroom). 'in flight' = peak micro-batch-stages "
                 "of activations in the simulated schedule; reserved = assumed CUDA/NCCL/all-to-all buffers")

    lines.append("")
    t2 = step.table2
    pp = lay.pipeline_parallel_size
    formula = {"1f1b": "(PP-1)(F+B)", "zb1p": "(PP-1)(F+B-2W)", "dualpipe": "(PP/2-1)(F&B+B-3W)"}[lay.schedule]
    table2_act = {"1f1b": pp, "zb1p": pp, "dualpipe": pp + 1}[lay.schedule]
    bubbles = step.bubbles
    lines.append(f"pipeline ({lay.schedule}, simulated event by event)")
    lines.append(f"  bubble share {step.bubble_share:.1%} of the pipeline time (mean over ranks; "
                 f"{_time(min(bubbles))} to {_time(max(bubbles))} idle per rank)")
    lines.append(f"  peak in flight {max(d.peak_in_flight for d in mem.devices):.0f} micro-batch-stages "
                 f"(Table 2: {table2_act}); parameters {lay.parameter_copies}x")
    lines.append(f"  Table 2 formula {formula} with stage {t2['middle_stage']}'s chunks F {t2['F'] * 1e3:.1f} ms, "
                 f"B {t2['B'] * 1e3:.1f} ms, W {t2['W'] * 1e3:.1f} ms"
                 + (f", F&B {t2['F&B'] * 1e3:.1f} ms" if lay.schedule == "dualpipe" else "")
                 + f": {_time(t2['bubble_formula'])}; simulated worst rank {_time(t2['bubble_simulated_max'])} "
                 "(the simulation adds uneven stages, pipeline sends and F != B-W)")

    lines.append("")
    a, n = plan.all_to_all, plan.all_to_all_naive
    lines.append(f"expert all-to-all per device (EP {lay.expert_parallel_size} over {_n(lay.ep_nodes, 'node')}; "
                 f"{cfg.num_experts_per_tok} experts per token; dispatch "
                 f"{_dtype(prec.dispatch_bytes)}, combine {_dtype(prec.combine_bytes)})")
    lines.append(f"  {'':26} {'copies per token':>17}  {'per token per MoE layer':>24}  {'per step':>21}")
    lines.append(f"  {'':26} {'IB':>8} {'NVLink':>8}  {'IB':>11} {'NVLink':>12}  {'IB':>10} {'NVLink':>10}")
    for label, x in ((f"naive ({cfg.num_experts_per_tok} copies)", n), (f"node-limited (<= {a.copies.max_nodes} nodes)", a)):
        lines.append(f"  {label:26} {x.copies.ib:8.2f} {x.copies.nvlink:8.2f}  {_size(x.per_token_layer.ib):>11} "
                     f"{_size(x.per_token_layer.nvlink):>12}  {_size(x.per_step.ib):>10} {_size(x.per_step.nvlink):>10}")
    lines.append(f"  (forward + backward: 4 all-to-alls per MoE layer; {a.moe_layer_passes_per_step} "
                 f"micro-batch x MoE-layer passes of {a.tokens_per_micro_batch} tokens per device per step)")
    if t2["compute_to_all_to_all"]:
        lines.append(f"  computation : all-to-all time of a forward chunk (stage {t2['middle_stage']}) = "
                     f"{t2['compute_to_all_to_all']:.2f} : 1")
    dp = plan.data_parallel
    lines.append(f"data parallel (ZeRO-{lay.zero_stage}): {_size(dp.gradient_bytes)} of gradients "
                 f"({'all-reduce' if lay.zero_stage == 0 else 'reduce-scatter'}, {_dtype(prec.grad_bytes)}) + "
                 f"{_size(dp.weight_bytes)} of weights (all-gather, {_dtype(prec.weight_bytes)}) per device per "
                 f"step; replicas: {dp.non_expert_replicas} non-expert, {dp.expert_replicas} expert")
    lines.append(f"pipeline sends: {_size(plan.pipeline.bytes_per_hop)} per hop, "
                 f"{_size(plan.pipeline.bytes_per_step)} per device per step")

    lines.append("")
    label = "ESTIMATE" if step.estimate else "from measured costs"
    lines.append(f"step time ({label}: {step.costs_source}; IB {dev.ib_gbps:g} GB/s, NVLink {dev.nvlink_gbps:g} GB/s "
                 "per GPU)")
    lines.append(f"  pipeline {_time(step.pipeline_seconds)} + data-parallel sync {_time(step.data_parallel_seconds)} "
                 f"= {_time(step.step_seconds)} per step of {step.tokens_per_step / 1e6:.1f}M tokens")
    lines.append(f"  {step.tokens_per_second / 1e6:.2f}M tokens/s ({step.tokens_per_second / lay.num_gpus:,.0f} per GPU), "
                 f"MFU {step.mfu:.1%} ({step.model_flops_per_token / 1e9:.1f} GFLOP/token with MTP, "
                 f"vs the BF16 dense peak)")
    lines.append(f"  exposed all-to-all up to {_time(max(step.exposed_comm))} per device per step")
    lines.append(f"inference: MLA KV cache {cfg.kv_lora_rank + cfg.qk_rope_head_dim} values per token per layer = "
                 f"{plan.kv_cache_bytes_per_token / 1e3:.1f} KB per token (BF16, {cfg.num_hidden_layers} layers)")
    return "\n".join(lines)
