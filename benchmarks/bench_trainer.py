"""Tiny-preset training throughput on this CPU: the trainer's step with XLA on against
the same step with XLA off (Keras' "auto" would pick off on CPU), side by side in one
run, and the share of step time the input pipeline would cost if the trainer waited for it.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 12] [--batch 8] [--seq-len 256]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    import numpy as np

    from model.config import ModelConfig
    from stages.trainer.config import TrainingConfig
    from stages.trainer.loop import Trainer
    from tests.stages.trainer.synthetic_shards import write_shards

    work = tempfile.mkdtemp(prefix="bench-trainer-")
    shards = write_shards(os.path.join(work, "shards"), args.seq_len, num_documents=3000)
    model_config = ModelConfig.from_preset("tiny")
    tokens_per_step = args.batch * args.seq_len
    results = {}
    for name, jit in (("xla_off", False), ("xla_on", True)):
        cfg = TrainingConfig(steps=3 + args.steps, seq_len=args.seq_len, global_batch_size=args.batch,
                             warmup_steps=1, learning_rate=1e-3, log_every=1000, checkpoint_every=1000,
                             jit_compile=jit)
        trainer = Trainer(model_config, cfg, os.path.join(work, name))
        iterator = iter(trainer.dataset(trainer.shard_batches(shards, eos_id=1)))
        step_fn = trainer._step_fn(1)
        for _ in range(3):
            step_fn(iterator)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            float(step_fn(iterator)["loss"])
            times.append(time.perf_counter() - start)
        # the input pipeline alone, on a fresh iterator: seconds per batch
        data = iter(trainer.dataset(trainer.shard_batches(shards, eos_id=1)))
        next(data)
        start = time.perf_counter()
        for _ in range(args.steps):
            next(data)["token_ids"].numpy()
        input_seconds = (time.perf_counter() - start) / args.steps
        step = float(np.median(times))
        results[name] = {"tokens_per_second": tokens_per_step / step, "step_seconds": step,
                         "input_share": input_seconds / step}
        print(f"{name}: {tokens_per_step / step:,.0f} tokens/s (median step {step * 1000:.0f} ms); "
              f"input pipeline alone {input_seconds * 1000:.1f} ms/batch = {input_seconds / step:.1%} of a step",
              flush=True)
    ratio = results["xla_on"]["tokens_per_second"] / results["xla_off"]["tokens_per_second"]
    print(f"ratio XLA on / off: {ratio:.2f}x  (tiny preset, batch {args.batch} x {args.seq_len})")


if __name__ == "__main__":
    main()
