"""The expert-parallel code path against today's step, side by side in one process.

Three training steps (forward + backward + AdamW, bf16 compute) of the same model on the
same tokens, timed in interleaved rounds:
  baseline  model/jax_steps.make_train_step: the step bench_gpu_small.py measures today
  trainer   stages/trainer/jax_step.ParallelStep without a mesh: the JAX trainer's step
            (global-count loss, clipping, router-bias update), experts computed locally
  ep        the same on a 1 x 1 ("data" x "expert") mesh: experts through shard_map and
            the all-to-all dispatch (one expert shard per device), ZeRO-1 shardings
Prints tokens/s and the ratios ep/baseline and ep/trainer, and XLA's memory plan of the
ep step (for the planner's validation, benchmarks/RESULTS.md).

    KERAS_BACKEND=jax python benchmarks/bench_expert_parallel.py --preset small --batch 8   # one H200
    KERAS_BACKEND=jax python benchmarks/bench_expert_parallel.py --preset tiny --batch 2 --seq 128 --rounds 2
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("KERAS_BACKEND", "jax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --steps steps each")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    import jax
    import keras
    import numpy as np

    from model.config import ModelConfig
    from model.flops import training_flops_per_token
    from model.jax_steps import make_train_step
    from model.transformer import DeepSeekV3CausalLM
    from stages.trainer import jax_parallel
    from stages.trainer.adamw import make_optimizer
    from stages.trainer.config import DistributionConfig, TrainingConfig
    from stages.trainer.jax_step import ParallelStep

    model_config = ModelConfig.from_preset(args.preset)
    # mask_documents off: plain causal attention (cuDNN's fused kernel), as the baseline runs
    cfg = TrainingConfig(seq_len=args.seq, global_batch_size=args.batch, warmup_steps=10, precision="bf16",
                         mask_documents=False, distribution=DistributionConfig(data=1, expert=1, zero=1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, model_config.vocab_size, (1, args.batch, args.seq)).astype(np.int32)
    batch = {"token_ids": tokens, "segment_ids": np.ones_like(tokens), "loss_mask": np.ones_like(tokens),
             "position_ids": np.broadcast_to(np.arange(args.seq, dtype=np.int32), tokens.shape).copy()}

    def build(mesh=None):
        keras.utils.set_random_seed(0)
        if mesh is None:
            model = DeepSeekV3CausalLM(model_config, dtype="mixed_bfloat16")
            return model, make_optimizer(cfg, model)
        with jax_parallel.expert_parallel(mesh, cfg.distribution):
            model = DeepSeekV3CausalLM(model_config, dtype="mixed_bfloat16")
            return model, make_optimizer(cfg, model)

    steps, memory = {}, {}
    model, optimizer = build()
    baseline_step, baseline_state = make_train_step(model, optimizer, cfg.mtp_lambda)
    device_tokens = jax.numpy.asarray(tokens[0])
    steps["baseline"] = [baseline_step, baseline_state, lambda s: baseline_step(s, device_tokens)]
    for name, mesh in (("trainer", None), ("ep", jax_parallel.make_mesh(cfg.distribution, jax.devices()[:1]))):
        model, optimizer = build(mesh)
        step = ParallelStep(model, optimizer, cfg, mesh)
        state = step.place(step.initial_state())
        analysis = step.lower(state, batch).compile().memory_analysis()
        memory[name] = {k: getattr(analysis, k) / 1e9 for k in
                        ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                         "temp_size_in_bytes")}
        steps[name] = [step, state, None]

    def run(name):
        entry = steps[name]
        if name == "baseline":
            entry[1], out = entry[0](entry[1], device_tokens)
        else:
            entry[1], out = entry[0](entry[1], batch)
        return float(out["loss"])   # blocks until the step is done

    times = {name: [] for name in steps}
    losses = {name: run(name) for name in steps}          # compile + first step
    print("first-step losses:", losses, flush=True)
    for _ in range(args.rounds):
        for name in steps:
            start = time.perf_counter()
            for _ in range(args.steps):
                run(name)
            times[name].append((time.perf_counter() - start) / args.steps)
    flops = training_flops_per_token(model_config, args.seq)
    result = {"preset": args.preset, "batch": args.batch, "seq": args.seq, "device": str(jax.devices()[0]),
              "memory_gb": memory, "first_losses": losses}
    for name, values in times.items():
        step_s = statistics.median(values)
        result[name] = {"step_s": step_s, "tokens_per_s": args.batch * args.seq / step_s,
                        "tflops": flops * args.batch * args.seq / step_s / 1e12, "rounds": values}
    result["ep_over_baseline"] = result["baseline"]["step_s"] / result["ep"]["step_s"]
    result["ep_over_trainer"] = result["trainer"]["step_s"] / result["ep"]["step_s"]
    for name in steps:
        print(f"{name:9s} {result[name]['step_s'] * 1e3:9.1f} ms/step  {result[name]['tokens_per_s']:12,.0f} tokens/s"
              f"  {result[name]['tflops']:7.1f} TFLOP/s", flush=True)
    print(f"speed ratio ep / baseline: {result['ep_over_baseline']:.3f}x   ep / trainer: "
          f"{result['ep_over_trainer']:.3f}x", flush=True)
    print("XLA memory plan (GB):", json.dumps(memory), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
