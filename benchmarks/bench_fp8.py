"""FP8 training (DeepSeek-V3's recipe, model/fp8.py) against BF16, side by side in one run.

`curve`: the same model trained twice by the backend's stage trainer (TensorFlow's
Trainer, or the JAX trainer with KERAS_BACKEND=jax), precision bf16 then fp8, same seed,
same batches: real text (standard-library source, one byte per token). Prints the
relative loss error |L_fp8 - L_bf16| / L_bf16 over the run (per step, and on curves
smoothed over --window steps, as the paper's Figure 10 compares them) against the
paper's 0.25%, and the FP8/BF16 ratio of the mean step time.

`layers` (JAX): forward + backward of each linear layer of the preset at training shapes
(MLA projections, dense/shared SwiGLU, the routed experts), bf16 vs fp8, timed in
interleaved rounds -> time ratios; and XLA's memory plan of one whole training step in
each precision (the activations FP8 caches for the backward pass).

    python benchmarks/bench_fp8.py curve --preset tiny --steps 300                  # CPU, TF
    KERAS_BACKEND=jax python benchmarks/bench_fp8.py curve --preset small --steps 200 --batch 8 --seq 4096
    KERAS_BACKEND=jax python benchmarks/bench_fp8.py layers --preset small --batch 8 --seq 4096
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def relative_loss_error(bf16: list[float], fp8: list[float], window: int) -> dict:
    """Per-step and smoothed (trailing mean over `window` steps) |fp8 - bf16| / bf16."""
    def smooth(values):
        return [statistics.fmean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]

    per_step = [abs(f - b) / b for b, f in zip(bf16, fp8)]
    smoothed = [abs(f - b) / b for b, f in zip(smooth(bf16), smooth(fp8))]
    tail = slice(len(per_step) // 2, None)   # after the early, fast-falling part of the curve
    return {"mean_per_step": statistics.fmean(per_step), "mean_per_step_second_half": statistics.fmean(per_step[tail]),
            "max_smoothed_second_half": max(smoothed[tail]), "final_smoothed": smoothed[-1],
            "final_loss_bf16": smooth(bf16)[-1], "final_loss_fp8": smooth(fp8)[-1]}


def train_curve(model_config, precision: str, shard_dir: str, args) -> tuple[list[float], float]:
    """-> (lm loss per step, mean seconds per step after the first log interval)."""
    import keras

    from stages.trainer.config import TrainingConfig

    cfg = TrainingConfig(steps=args.steps, seq_len=args.seq, global_batch_size=args.batch,
                         micro_batches=args.micro_batches, learning_rate=args.lr, warmup_steps=args.steps // 10,
                         constant_steps=args.steps // 2, decay_steps=args.steps - args.steps // 10 - args.steps // 2,
                         final_learning_rate=args.lr / 10, log_every=1, checkpoint_every=args.steps,
                         jit_compile=True, precision=precision, seed=args.seed)
    output = tempfile.mkdtemp(prefix=f"fp8-{precision}-")
    if keras.backend.backend() == "jax":
        from stages.trainer.jax_trainer import JaxTrainer as Trainer
    else:
        from stages.trainer.loop import Trainer
    trainer = Trainer(model_config, cfg, output)
    trainer.fit(shard_dir, eos_id=1)
    rows = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    losses = [row["lm_loss"] for row in sorted(rows, key=lambda r: r["step"])]
    rates = [row["tokens_per_second"] for row in rows[len(rows) // 10:] if "tokens_per_second" in row]
    seconds = args.batch * args.seq / statistics.median(rates) if rates else float("nan")
    return losses, seconds


def curve(args) -> dict:
    from model.config import ModelConfig
    from tests.stages.trainer.synthetic_shards import stdlib_documents, write_shards

    model_config = ModelConfig.from_preset(args.preset)
    shard_dir = write_shards(tempfile.mkdtemp(prefix="fp8-corpus-"), args.seq, num_documents=args.documents,
                             corpus=stdlib_documents)
    bf16, bf16_seconds = train_curve(model_config, "bf16", shard_dir, args)
    fp8, fp8_seconds = train_curve(model_config, "fp8", shard_dir, args)
    result = {"preset": args.preset, "steps": args.steps, "tokens_per_step": args.batch * args.seq,
              "relative_loss_error": relative_loss_error(bf16, fp8, args.window),
              "step_seconds": {"bf16": bf16_seconds, "fp8": fp8_seconds}, "fp8_over_bf16_time": fp8_seconds / bf16_seconds,
              "loss_bf16": bf16, "loss_fp8": fp8}
    if args.control:
        # how far any rounding change moves this run's curve: float32 against bf16
        float32, _ = train_curve(model_config, "float32", shard_dir, args)
        result["loss_float32"] = float32
        result["control_bf16_vs_float32"] = relative_loss_error(float32, bf16, args.window)
    error = result["relative_loss_error"]
    print(f"{args.preset}: {args.steps} steps; final loss (smoothed over {args.window}) bf16 "
          f"{error['final_loss_bf16']:.4f}, fp8 {error['final_loss_fp8']:.4f}")
    print(f"relative loss error: mean per step {error['mean_per_step']:.4%}, second half "
          f"{error['mean_per_step_second_half']:.4%}; smoothed: max over the second half "
          f"{error['max_smoothed_second_half']:.4%}, final {error['final_smoothed']:.4%} (paper: < 0.25%)")
    if args.control:
        control = result["control_bf16_vs_float32"]
        print(f"control, bf16 against float32: mean per step {control['mean_per_step']:.4%}, second half "
              f"{control['mean_per_step_second_half']:.4%}; smoothed: max over the second half "
              f"{control['max_smoothed_second_half']:.4%}, final {control['final_smoothed']:.4%}")
    print(f"step time fp8 / bf16: {result['fp8_over_bf16_time']:.3f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("curve", "layers"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", type=int, default=400, help="standard-library files in the corpus")
    parser.add_argument("--window", type=int, default=20, help="steps of the smoothing window")
    parser.add_argument("--control", action="store_true", help="curve: also train in float32, the noise floor")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-step", action="store_true", help="layers: per-layer timings only")
    parser.add_argument("--tensor-fp8", action="store_true",
                        help="layers: also time XLA's per-tensor-scaled FP8 GEMM (the speed ceiling)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.mode == "curve":
        result = curve(args)
    else:
        from benchmarks.fp8_layers import layers

        result = layers(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
