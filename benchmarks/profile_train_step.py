"""Where seekforge's CPU training step spends its time: forward + backward of each piece
of the tiny model alone, at the training step's shapes, as tf.function (no XLA) and
with XLA; plus the AdamW update alone. A coarse profile that needs no profiler plugin.

    .venv/bin/python benchmarks/profile_train_step.py [--batch 8 --seq 256]

Per piece: milliseconds per call (median of --reps) and how many of that piece one step
runs, so "x count" shows its share of the step.
"""

import argparse
import os
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_cpu_train_step import time_calls  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.transformer import DeepSeekV3CausalLM  # noqa: E402


def median_ms(fn, reps: int) -> float:
    return 1000 * statistics.median(time_calls(fn, warmup=2, reps=reps))


def forward_backward(call, variables, jit: bool):
    @tf.function(jit_compile=jit)
    def run(*inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs[0]) if inputs[0].dtype.is_floating else None
            out = call(*inputs)
            loss = tf.reduce_sum(out[0] if isinstance(out, tuple) else out)
        return tape.gradient(loss, variables)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    cfg = ModelConfig.from_preset("tiny").replace(num_nextn_predict_layers=0)
    model = DeepSeekV3CausalLM(cfg)
    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(0, cfg.vocab_size, (args.batch, args.seq + 1)).astype("int32"))
    h = tf.constant(rng.normal(size=(args.batch, args.seq, cfg.hidden_size)).astype("float32"))
    cos, sin = model._rope(tf.range(args.seq)[None, :])
    from model.masks import causal_mask
    mask = causal_mask(args.seq)
    dense, moe = model.decoder_layers[0], model.decoder_layers[cfg.first_k_dense_replace]

    def lm_loss(x):
        logits = model(x[:, :-1])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(x[:, 1:], logits))

    def head(x):
        logits = model.head(model.norm(x))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(ids[:, 1:], logits)

    pieces = {
        "whole model fwd+bwd (CE loss)": (lm_loss, model.trainable_variables, ids, 1),
        "MLA attention (naive path)": (lambda x: moe.self_attn(x, cos, sin, mask), moe.self_attn.trainable_variables, h,
                                       cfg.num_hidden_layers),
        "MoE: router + routed + shared": (lambda x: moe.mlp(x)[0], moe.mlp.trainable_variables, h, cfg.num_moe_layers),
        "  routed experts only": (lambda x: moe.mlp.experts(tf.reshape(x, (-1, cfg.hidden_size)),
                                                            *moe.mlp.gate(tf.reshape(x, (-1, cfg.hidden_size)))[:2]),
                                  moe.mlp.experts.trainable_variables, h, cfg.num_moe_layers),
        "dense SwiGLU MLP": (dense.mlp, dense.mlp.trainable_variables, h, cfg.first_k_dense_replace),
        "final norm + lm_head + CE": (head, model.norm.trainable_variables + model.lm_head.trainable_variables, h, 1),
    }
    print(f"tiny preset, batch {args.batch} x seq {args.seq}, milliseconds per call (median of {args.reps})")
    for jit in (False, True):
        print(f"--- tf.function(jit_compile={jit})")
        for name, (call, variables, x, count) in pieces.items():
            run = forward_backward(call, variables, jit)
            ms = median_ms(lambda: [g.numpy() if hasattr(g, "numpy") else g for g in run(x)], args.reps)
            print(f"{name:34s} {ms:8.1f} ms  x {count} = {ms * count:8.1f} ms")
        optimizer = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.1)
        optimizer.build(model.trainable_variables)
        grads = [tf.ones_like(v) for v in model.trainable_variables]
        apply = tf.function(lambda: optimizer.apply_gradients(zip(grads, model.trainable_variables)), jit_compile=jit)
        print(f"{'AdamW update':34s} {median_ms(lambda: apply(), args.reps):8.1f} ms")


if __name__ == "__main__":
    main()
