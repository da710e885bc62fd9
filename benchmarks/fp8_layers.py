"""bench_fp8.py's `layers` mode (JAX): FP8 against BF16 per linear layer and per training step.

Per layer, forward + backward (gradients of x and W) at the preset's training shapes, in
interleaved rounds:
  bf16        x @ W in bfloat16 (what `precision: bf16` runs)
  fp8         model.linear.fp8_matmul: the FP8 recipe, operands dequantised then multiplied in BF16
  fp8_kernel  the same with model/fp8_gemm's Pallas kernel (E4M3 operands on the FP8 tensor cores,
              scales applied in FP32 every 128 of K): on a Hopper GPU only; off by default in
              training until this column shows it right and fast
  fp8_tensor  (--tensor-fp8) XLA's native FP8 GEMM (float8_e4m3fn operands, one scale per tensor, which
              XLA hands to cuBLASLt on Hopper): the speed an FP8 GEMM reaches on this GPU,
              not the recipe's numerics (its scales are per tile/block)
and the routed experts' SwiGLU (model.experts.routed_expert_ffn, bf16 vs fp8).
Per step: the JAX trainer's step (stages/trainer/jax_step.ParallelStep, no mesh) in each
precision: time, MFU and XLA's memory plan.
"""

import json
import statistics
import time


def _timed(functions: dict, rounds: int, repeats: int = 10) -> dict:
    """name -> median seconds per call over interleaved rounds (after one warm-up call)."""
    import jax

    for fn in functions.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(repeats):
                out = fn()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def _linear_shapes(cfg) -> dict:
    """name -> (in, out) of the linear layers the FP8 recipe covers."""
    heads = cfg.num_attention_heads
    return {"q_a_proj": (cfg.hidden_size, cfg.q_lora_rank), "q_b_proj": (cfg.q_lora_rank, heads * cfg.qk_head_dim),
            "kv_a_proj_with_mqa": (cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim),
            "kv_b_proj": (cfg.kv_lora_rank, heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)),
            "o_proj": (heads * cfg.v_head_dim, cfg.hidden_size),
            "mlp.gate_proj (dense)": (cfg.hidden_size, cfg.intermediate_size),
            "mlp.down_proj (dense)": (cfg.intermediate_size, cfg.hidden_size),
            "shared_experts.gate_proj": (cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)}


def _tensor_scaled_fp8(x, w):
    """y = (x / sx)_e4m3 (w / sw)_e4m3 * sx * sw with per-tensor scales."""
    import jax.numpy as jnp

    sx, sw = jnp.max(jnp.abs(x)).astype(jnp.float32) / 448, jnp.max(jnp.abs(w)).astype(jnp.float32) / 448
    xq, wq = (x / sx).astype(jnp.float8_e4m3fn), (w / sw).astype(jnp.float8_e4m3fn)
    y = jnp.dot(xq.astype(jnp.bfloat16), wq.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    return (y * (sx * sw)).astype(jnp.bfloat16)


def _fp8_matmul_with(mode: str):
    """fp8_matmul traced with model/fp8_gemm.MODE = mode ("off": dequantised; "hopper": the kernel)."""
    from model import fp8_gemm
    from model.linear import fp8_matmul

    def matmul(x, w):
        saved, fp8_gemm.MODE = fp8_gemm.MODE, mode
        try:
            return fp8_matmul(x, w)
        finally:
            fp8_gemm.MODE = saved
    return matmul


def layer_times(cfg, tokens: int, rounds: int, tensor_fp8: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from model import fp8_gemm

    rng = np.random.default_rng(0)
    results = {}
    for name, (d_in, d_out) in _linear_shapes(cfg).items():
        x = jnp.asarray(rng.standard_normal((tokens, d_in)), jnp.bfloat16)
        w = jnp.asarray(rng.standard_normal((d_in, d_out)) * 0.02, jnp.float32)
        variants = {"bf16": lambda x, w: x @ w.astype(jnp.bfloat16), "fp8": _fp8_matmul_with("off")}
        if fp8_gemm.on_hopper():
            variants["fp8_kernel"] = _fp8_matmul_with("hopper")
        if tensor_fp8:
            variants["fp8_tensor"] = lambda x, w: _tensor_scaled_fp8(x, w.astype(jnp.bfloat16))
        # a random cotangent, passed in: with sum(y), dy would be a constant that XLA folds
        dy = jnp.asarray(rng.standard_normal((tokens, d_out)), jnp.bfloat16)
        functions = {}
        for variant, f in variants.items():
            step = jax.jit(jax.grad(lambda x, w, dy, f=f: (f(x, w) * dy).astype(jnp.float32).sum(), argnums=(0, 1)))
            functions[variant] = lambda step=step, dy=dy: step(x, w, dy)
        times = _timed(functions, rounds)
        flops = 6 * tokens * d_in * d_out
        results[name] = {"shape": [tokens, d_in, d_out], **{f"{v}_ms": t * 1e3 for v, t in times.items()},
                         **{f"{v}_over_bf16": t / times["bf16"] for v, t in times.items() if v != "bf16"},
                         "bf16_tflops": flops / times["bf16"] / 1e12}
        print(f"{name:26s} {tokens}x{d_in}x{d_out}: " + ", ".join(
            f"{v} {t * 1e3:7.3f} ms ({t / times['bf16']:.2f}x)" for v, t in times.items()), flush=True)
    results["routed_experts"] = _expert_times(cfg, tokens, rounds)
    return results


def _expert_times(cfg, tokens: int, rounds: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from model.experts import routed_expert_ffn

    rng = np.random.default_rng(0)
    e, h, i, k = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size, cfg.num_experts_per_tok
    x = jnp.asarray(rng.standard_normal((tokens, h)), jnp.bfloat16)
    indices = jnp.asarray(np.argsort(rng.random((tokens, e)), axis=1)[:, :k], jnp.int32)
    weights = jnp.asarray(rng.random((tokens, k)), jnp.float32)
    ws = [jnp.asarray(rng.standard_normal(s) * 0.02, jnp.float32) for s in ((e, h, i), (e, h, i), (e, i, h))]
    functions = {}
    dy = jnp.asarray(rng.standard_normal((tokens, h)), jnp.bfloat16)
    for variant, fp8 in (("bf16", False), ("fp8", True)):
        def loss(x, dy, *ws, fp8=fp8):
            ws = ws if fp8 else [w.astype(jnp.bfloat16) for w in ws]
            return (routed_expert_ffn(x, indices, weights, *ws, fp8=fp8) * dy).astype(jnp.float32).sum()
        step = jax.jit(jax.grad(loss, argnums=(0, 2, 3, 4)))
        functions[variant] = lambda step=step: step(x, dy, *ws)
    times = _timed(functions, rounds)
    print(f"{'routed experts':26s} {tokens} tokens x top-{k} of {e}: bf16 {times['bf16'] * 1e3:7.3f} ms, "
          f"fp8 recipe {times['fp8'] * 1e3:7.3f} ms ({times['fp8'] / times['bf16']:.2f}x)", flush=True)
    return {**{f"{v}_ms": t * 1e3 for v, t in times.items()}, "fp8_over_bf16": times["fp8"] / times["bf16"]}


def step_times(cfg, args) -> dict:
    """The JAX trainer's step in bf16 and fp8: time, MFU, XLA memory plan."""
    import jax
    import keras
    import numpy as np

    from model.flops import training_flops_per_token
    from model.transformer import DeepSeekV3CausalLM
    from stages.trainer.adamw import make_optimizer
    from stages.trainer.config import TrainingConfig
    from stages.trainer.jax_step import ParallelStep
    from model.fp8 import dtype_policy

    rng = np.random.default_rng(0)
    tokens = rng.integers(2, cfg.vocab_size, (1, args.batch, args.seq)).astype(np.int32)
    batch = {"token_ids": tokens, "segment_ids": np.ones_like(tokens), "loss_mask": np.ones_like(tokens),
             "position_ids": np.broadcast_to(np.arange(args.seq, dtype=np.int32), tokens.shape).copy()}
    steps, memory = {}, {}
    for precision in ("bf16", "fp8"):
        training = TrainingConfig(seq_len=args.seq, global_batch_size=args.batch, warmup_steps=10,
                                  precision=precision, mask_documents=False)
        keras.utils.set_random_seed(0)
        model = DeepSeekV3CausalLM(cfg, dtype=dtype_policy(precision))
        step = ParallelStep(model, make_optimizer(training, model), training, None)
        state = step.place(step.initial_state())
        analysis = step.lower(state, batch).compile().memory_analysis()
        memory[precision] = {k: getattr(analysis, k) / 1e9 for k in ("argument_size_in_bytes", "temp_size_in_bytes")}
        steps[precision] = [step, state]

    def run(precision):
        entry = steps[precision]
        entry[1], out = entry[0](entry[1], batch)
        return out["loss"]

    times = _timed({p: (lambda p=p: run(p)) for p in steps}, args.rounds, repeats=3)
    flops = training_flops_per_token(cfg, args.seq) * args.batch * args.seq
    peak = 989e12  # H200 dense BF16 tensor-core peak, the MFU denominator for both precisions
    result = {"memory_gb": memory}
    for precision, seconds in times.items():
        result[precision] = {"step_s": seconds, "tokens_per_s": args.batch * args.seq / seconds,
                             "mfu_vs_bf16_peak": flops / seconds / peak}
        print(f"step {precision}: {seconds * 1e3:8.1f} ms, {result[precision]['tokens_per_s']:,.0f} tokens/s, "
              f"MFU {result[precision]['mfu_vs_bf16_peak']:.1%} (of the BF16 peak); XLA temp "
              f"{memory[precision]['temp_size_in_bytes']:.2f} GB", flush=True)
    result["fp8_over_bf16_time"] = times["fp8"] / times["bf16"]
    result["fp8_over_bf16_temp_memory"] = memory["fp8"]["temp_size_in_bytes"] / memory["bf16"]["temp_size_in_bytes"]
    print(f"step time fp8 / bf16: {result['fp8_over_bf16_time']:.3f}; XLA temp memory fp8 / bf16: "
          f"{result['fp8_over_bf16_temp_memory']:.3f}", flush=True)
    return result


def layers(args) -> dict:
    import jax

    from model.config import ModelConfig

    cfg = ModelConfig.from_preset(args.preset)
    tokens = args.batch * args.seq // args.micro_batches
    result = {"preset": args.preset, "device": str(jax.devices()[0]), "tokens": tokens}
    if not args.skip_step:
        result["step"] = step_times(cfg, args)
        if args.out:  # what is measured survives a later crash
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    result["layers"] = layer_times(cfg, tokens, args.rounds, args.tensor_fp8)
    return result
