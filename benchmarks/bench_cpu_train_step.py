"""One training step (forward + backward + AdamW) and forward-only inference on CPU:
seekforge on Keras/TensorFlow against transformers' DeepseekV3ForCausalLM on PyTorch,
same config (the tiny preset via to_hf), same weights, same batch and sequence length,
float32.

    .venv/bin/python benchmarks/bench_cpu_train_step.py [--batch 8 --seq 256 --reps 5 --rounds 2]

Each contender runs in its own child process, one at a time, alternating over --rounds
(torch, TF+XLA, TF graph, torch, ...): in one process, TensorFlow's and PyTorch's thread
pools fight over the two cores (spinning workers of one slow the other down several
fold), which would measure the contention, not the frameworks. Each child warms up
(--warmup steps, compilation included) and times --reps steps; the parent prints the
median and the best (min) over all rounds, tokens/s, and the ratio ours / theirs (> 1:
seekforge faster). On a machine shared with other jobs, trust "min": PyTorch's two
OpenMP threads slow down up to 10x whenever another process takes a core, TensorFlow's
thread pool much less, so medians there measure the background load.
Ours runs as tf.function with jit_compile=True (XLA) and without (plain TF graph).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LR, BETAS, WEIGHT_DECAY = 1e-4, (0.9, 0.95), 0.1
CONTENDERS = ["transformers", "ours tf.function+XLA", "ours tf.function"]


def time_calls(step, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _inputs(vocab: int, batch: int, seq: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, vocab, size=(batch, seq)).astype("int32")


def _tasks(args, vocab):
    """name -> (token ids, tokens counted): the training batch predicts ids[:, 1:]."""
    return {"train step": (_inputs(vocab, args.batch, args.seq + 1, 0), args.batch * args.seq),
            "forward, batch 1": (_inputs(vocab, 1, args.seq, 1), args.seq),
            "forward, batch 8": (_inputs(vocab, 8, args.seq, 2), 8 * args.seq)}


# ---------------------------------------------------------------- seekforge (TF)
def run_ours(checkpoint: str, args, jit: bool) -> dict:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras
    import tensorflow as tf

    from model.convert import load_hf

    model = load_hf(checkpoint)
    optimizer = keras.optimizers.AdamW(learning_rate=LR, beta_1=BETAS[0], beta_2=BETAS[1],
                                       weight_decay=WEIGHT_DECAY)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit)
    def train_step(ids):
        with tf.GradientTape() as tape:
            logits = model(ids[:, :-1])
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(ids[:, 1:], logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    forward = tf.function(lambda ids: model(ids), jit_compile=jit)
    out = {}
    for name, (ids, _) in _tasks(args, model.cfg.vocab_size).items():
        fn, x = (train_step if name == "train step" else forward), tf.constant(ids)
        out[name] = time_calls(lambda: fn(x).numpy(), args.warmup, args.reps)
    return out


# ---------------------------------------------------------------- transformers (PyTorch)
def run_theirs(checkpoint: str, args) -> dict:
    import torch
    import transformers

    model = transformers.DeepseekV3ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def train_step(ids):
        model.train()
        logits = model(ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def forward(ids):
        model.eval()
        with torch.no_grad():
            return model(ids).logits.numpy()

    out = {}
    for name, (ids, _) in _tasks(args, model.config.vocab_size).items():
        fn, x = (train_step if name == "train step" else forward), torch.tensor(ids, dtype=torch.long)
        out[name] = time_calls(lambda: fn(x), args.warmup, args.reps)
    return out


# ---------------------------------------------------------------- driver
def _versions() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch, transformers, tensorflow, keras; print("
                          "f'torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
                          "{transformers.__version__}, tensorflow {tensorflow.__version__}, '"
                          "f'keras {keras.__version__}')"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_theirs(args.checkpoint, args) if args.child == "transformers" else \
            run_ours(args.checkpoint, args, jit="XLA" in args.child)
        print("RESULT " + json.dumps(result))
        return

    from model.config import ModelConfig

    cfg = ModelConfig.from_preset(args.preset).replace(num_nextn_predict_layers=0)  # transformers has no MTP
    print(f"config: {args.preset} preset, no MTP, float32, train batch {args.batch} x seq {args.seq}; "
          f"{_versions()}; {os.cpu_count()} CPUs; {args.rounds} rounds x {args.reps} reps", flush=True)
    times = {c: {} for c in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                        "from model.config import ModelConfig; from model.transformer import DeepSeekV3CausalLM;"
                        "from model.convert import save_hf;"
                        f"save_hf(DeepSeekV3CausalLM(ModelConfig.from_preset({args.preset!r})"
                        ".replace(num_nextn_predict_layers=0)), sys.argv[2])", ROOT, tmp + "/ckpt"], check=True)
        for _ in range(args.rounds):
            for contender in CONTENDERS:
                out = subprocess.run([sys.executable, __file__, "--child", contender, "--checkpoint", tmp + "/ckpt",
                                      *[f"--{k}={getattr(args, k)}" for k in ("batch", "seq", "warmup", "reps")]],
                                     capture_output=True, text=True)
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode or not lines:
                    print(f"{contender}: FAILED (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
                    continue
                for task, samples in json.loads(lines[0][len("RESULT "):]).items():
                    times[contender].setdefault(task, []).extend(samples)
    tasks = _tasks(args, cfg.vocab_size)
    theirs = times["transformers"]
    for task, (_, tokens) in tasks.items():
        for contender in CONTENDERS[1:]:
            if task not in times[contender] or task not in theirs:
                continue
            for stat in (statistics.median, min):
                ours_s, theirs_s = stat(times[contender][task]), stat(theirs[task])
                print(f"{task:18s} {contender:22s} {stat.__name__:6s} {tokens / ours_s:8.0f} tok/s   transformers "
                      f"{tokens / theirs_s:8.0f} tok/s   ratio ours/theirs {theirs_s / ours_s:5.2f}", flush=True)


if __name__ == "__main__":
    main()
