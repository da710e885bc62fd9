"""GPU benchmark of the `small` preset on one H200: seekforge (Keras 3 on JAX, jit) against
transformers' DeepseekV3ForCausalLM (PyTorch), same config (ModelConfig.to_hf()), same
weights, same batch and sequence length, in one run.

    python3 benchmarks/bench_gpu_small.py [--out DIR]      # on the GPU machine
    .venv/bin/python benchmarks/bench_gpu_small.py --quick # tiny preset on CPU: checks the plumbing

Sections, each in its own child process (so JAX and PyTorch never share a GPU's memory,
and a hang costs only its own timeout):
  checkpoint     random `small` weights (with MTP) saved once with save_hf; both sides load it
  parity_*       main-model next-token loss of one batch, float32 and bf16, ours vs theirs
  experts        routed-expert designs at the training shapes: time and TFLOP/s, fwd and fwd+bwd
  train_ours     forward + backward + AdamW, bf16 compute / float32 weights, largest batch that fits
  train_theirs   the same step in PyTorch (autocast bf16, fused AdamW), torch.compile then eager
  decode_*       greedy generation at batch 1 and 64 (ours: absorbed-MLA cache, jitted step)
  pieces         where our step's time goes: each block's forward + backward timed alone
With two GPUs visible, two chains run at the same time, one per GPU: GPU 0 checkpoint ->
parity_ours -> train_ours -> decode_ours; GPU 1 parity_theirs -> decode_theirs ->
train_theirs (same batch) -> experts and pieces (given --expert-impl and --train-batch)
-> train_theirs with bf16 weights -> torch.compile. With one GPU everything runs in turn.
Output: a log per chain, results.json and summary.txt under --out ($OUT by default).

MFU = training FLOPs per token (model/flops.py: 3 x forward, forward = 2 x the activated
matrix weights a token passes through + causal attention over (s + 1) / 2 keys with MLA's
real head dims, MTP module included) x tokens/s / 750 TFLOP/s (a bf16 8192^3 matmul
through JAX on that machine).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PEAK_FLOPS = 750e12
LR, BETAS, WEIGHT_DECAY, MTP_LAMBDA = 1e-4, (0.9, 0.95), 0.1, 0.3
EXPERT_DESIGNS = ["ragged_dot", "blocks", "capacity", "grouped_gemm"]
JAX_CHAIN = ["checkpoint", "parity_ours", "experts", "train_ours", "decode_ours", "pieces"]
TORCH_CHAIN = ["parity_theirs", "decode_theirs", "train_theirs_compile", "train_theirs_eager"]


def settings(quick: bool) -> dict:
    if quick:
        return dict(preset="tiny", seq=128, batch=2, parity_shape=(2, 64), expert_tokens=512, steps=2, warmup=1,
                    decode_batches=[1, 4], prompt=16, new_tokens=8, compile_torch=False)
    return dict(preset="small", seq=4096, batch=None, parity_shape=(2, 1024), expert_tokens=8 * 4096, steps=8,
                warmup=2, decode_batches=[1, 64], prompt=128, new_tokens=128, compile_torch=True)


def token_batch(vocab: int, shape, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(2, vocab, size=shape).astype("int32")


def median_time(fn, warmup: int, reps: int) -> list[float]:
    """fn() must block until its work is done. Returns the timed seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# =================================================================== JAX side (ours)
def _jax_setup():
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    return jax


def _load_ours(ckpt, dtype, impl):
    from model.convert import load_hf

    model = load_hf(ckpt, dtype=dtype)
    for moe in model.moe_layers():
        moe.experts.impl = impl
    return model


def child_checkpoint(a, s):
    _jax_setup()
    import keras

    from model.config import ModelConfig
    from model.convert import save_hf
    from model.transformer import DeepSeekV3CausalLM

    keras.utils.set_random_seed(0)
    model = DeepSeekV3CausalLM(ModelConfig.from_preset(s["preset"]))
    save_hf(model, a.ckpt)
    return {"parameters": int(sum(math.prod(v.shape) for v in model.weights))}


def _jitted_forward(model):
    import jax

    def forward(trainable, non_trainable, ids):
        out, _ = model.stateless_call(trainable, non_trainable, ids, return_aux=True)
        from model.losses import causal_lm_loss

        return causal_lm_loss(out, ids, mtp_lambda=MTP_LAMBDA)["lm_loss"]

    values = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    return lambda ids: float(jax.jit(forward)(*values, ids))


def child_parity_ours(a, s):
    jax = _jax_setup()
    ids = token_batch(_vocab(s), s["parity_shape"], seed=11)
    out = {}
    with jax.default_matmul_precision("highest"):
        out["lm_loss_float32"] = _jitted_forward(_load_ours(a.ckpt, "float32", a.impl))(ids)
    out["lm_loss_bf16"] = _jitted_forward(_load_ours(a.ckpt, "mixed_bfloat16", a.impl))(ids)
    out["expert_impl"] = a.impl
    return out


def _vocab(s):
    from model.config import ModelConfig

    return ModelConfig.from_preset(s["preset"]).vocab_size


def child_experts(a, s):
    """Each design's forward and forward + backward at the training shapes, checked
    against the portable "blocks" path on the same inputs."""
    jax = _jax_setup()
    import jax.numpy as jnp
    import numpy as np

    from model.config import ModelConfig
    from model.experts import routed_expert_ffn

    cfg = ModelConfig.from_preset(s["preset"])
    tokens, e, k, h, i = s["expert_tokens"], cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.hidden_size, \
        cfg.moe_intermediate_size
    rng = np.random.default_rng(0)
    bf16 = jnp.bfloat16
    x = jnp.asarray(rng.standard_normal((tokens, h)), bf16)
    weights = [jnp.asarray(rng.standard_normal(shape) * 0.02, bf16) for shape in [(e, h, i), (e, h, i), (e, i, h)]]
    indices = jnp.asarray(np.argsort(rng.random((tokens, e)), axis=1)[:, :k], jnp.int32)  # k distinct experts
    gates = jnp.asarray(rng.uniform(0.1, 1.0, (tokens, k)), jnp.float32)
    probe = jnp.asarray(rng.standard_normal((tokens, h)), bf16)
    flops_forward = 2 * tokens * k * 3 * h * i

    def run(impl):
        forward = jax.jit(lambda x, w: routed_expert_ffn(x, indices, gates, *w, impl=impl))
        loss = lambda x, w: jnp.sum((forward(x, w) * probe).astype(jnp.float32))
        both = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return forward, both

    ref_forward, ref_both = run("blocks")
    ref_out = np.asarray(ref_forward(x, weights), np.float32)
    ref_grads = [np.asarray(g, np.float32) for g in jax.tree_util.tree_leaves(ref_both(x, weights)[1])]

    def rel(a_, b_):
        return float(np.linalg.norm(np.asarray(a_, np.float32) - b_) / (np.linalg.norm(b_) + 1e-30))

    results = {}
    for impl in EXPERT_DESIGNS:
        try:
            forward, both = run(impl)
            out = forward(x, weights)
            grads = jax.tree_util.tree_leaves(both(x, weights)[1])
            t_fwd = median_time(lambda: forward(x, weights).block_until_ready(), 2, 10)
            t_both = median_time(lambda: jax.block_until_ready(both(x, weights)), 2, 10)
            fwd, full = statistics.median(t_fwd), statistics.median(t_both)
            results[impl] = dict(
                forward_ms=fwd * 1e3, forward_backward_ms=full * 1e3,
                forward_tflops=flops_forward / fwd / 1e12, forward_backward_tflops=3 * flops_forward / full / 1e12,
                rel_err_out=rel(out, ref_out), rel_err_grads=max(rel(g, r) for g, r in zip(grads, ref_grads)))
        except Exception as error:  # a design that does not compile or run here is reported, not fatal
            results[impl] = dict(error=f"{type(error).__name__}: {str(error)[:300]}")
        print(impl, results[impl], flush=True)
    usable = {n: r for n, r in results.items()
              if "error" not in r and r["rel_err_out"] < 2e-2 and r["rel_err_grads"] < 2e-2}
    best = min(usable, key=lambda n: usable[n]["forward_backward_ms"]) if usable else "blocks"
    return {"tokens": tokens, "rows": tokens * k, "shapes": dict(experts=e, top_k=k, hidden=h, intermediate=i),
            "designs": results, "best": best}


def _device_memory(jax):
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit", 0)


def child_train_ours(a, s):
    jax = _jax_setup()
    import keras

    from model.flops import training_flops_per_token
    from model.jax_steps import make_train_step

    def fresh():
        model = _load_ours(a.ckpt, "mixed_bfloat16", a.impl)
        optimizer = keras.optimizers.AdamW(learning_rate=LR, beta_1=BETAS[0], beta_2=BETAS[1],
                                           weight_decay=WEIGHT_DECAY)
        return (model, *make_train_step(model, optimizer, MTP_LAMBDA))

    model, step, state = fresh()
    vocab, seq = model.cfg.vocab_size, s["seq"]
    parameters = sum(math.prod(v.shape) for v in model.trainable_variables)
    memory = {}

    def compiled_at(batch):
        ids = token_batch(vocab, (batch, seq), seed=batch)
        start = time.perf_counter()
        compiled = step.lower(state, ids).compile()
        analysis = compiled.memory_analysis()
        need = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes \
            - analysis.alias_size_in_bytes
        memory[batch] = dict(temp_gb=analysis.temp_size_in_bytes / 1e9, total_gb=need / 1e9,
                             compile_s=time.perf_counter() - start)
        print(f"batch {batch}: {memory[batch]}", flush=True)
        return compiled, ids, analysis

    batch = s["batch"]
    if batch is None:  # size the batch from the compiler's memory plan at a probe batch
        probe = 4
        _, _, analysis = compiled_at(probe)
        limit = _device_memory(jax) or 140e9
        # temporaries that do not grow with the batch: about one float32 gradient per weight
        per_sequence = max(analysis.temp_size_in_bytes - 4 * parameters, analysis.temp_size_in_bytes / 2) / probe
        fixed = analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes \
            + 4 * parameters
        batch = max(1, min(64, int((0.9 * limit - fixed) // per_sequence)))
        print(f"memory limit {limit / 1e9:.1f} GB, {per_sequence / 1e9:.2f} GB per sequence -> batch {batch}",
              flush=True)
    while True:
        try:
            compiled, ids, _ = compiled_at(batch)
            state, losses = compiled(state, ids)
            first_loss = float(losses["loss"])
            break
        except Exception as error:  # out of memory at compile or run time: try a smaller batch
            if batch == 1 or "RESOURCE_EXHAUSTED" not in str(error) and "memory" not in str(error).lower():
                raise
            print(f"batch {batch} does not fit: {str(error)[:200]}", flush=True)
            batch = max(1, batch * 3 // 4)
            model, step, state = fresh()  # the failed call may have consumed the donated state
    holder = {"state": state}

    def one_step():
        holder["state"], out = compiled(holder["state"], ids)
        holder["loss"] = float(out["loss"])

    times = median_time(one_step, s["warmup"], s["steps"])
    step_s = statistics.median(times)
    tokens_per_s = batch * seq / step_s
    flops_mtp = training_flops_per_token(model.cfg, seq, mtp=True)
    flops_main = training_flops_per_token(model.cfg, seq, mtp=False)
    return dict(batch=batch, seq=seq, step_s=step_s, step_times=times, tokens_per_s=tokens_per_s,
                mfu=flops_mtp * tokens_per_s / PEAK_FLOPS, mfu_main_model_only=flops_main * tokens_per_s / PEAK_FLOPS,
                train_flops_per_token=flops_mtp, train_flops_per_token_main=flops_main,
                first_loss=first_loss, last_loss=holder["loss"], memory=memory, expert_impl=a.impl)


def child_pieces(a, s):
    """Forward + backward of each piece of our step alone, at the training batch, so the
    largest cost can be named; times x how often the piece occurs in one step."""
    jax = _jax_setup()
    import jax.numpy as jnp
    import keras
    import numpy as np

    model = _load_ours(a.ckpt, "mixed_bfloat16", a.impl)
    cfg, batch, seq = model.cfg, a.batch, s["seq"]
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((batch, seq, cfg.hidden_size)), jnp.bfloat16)
    ids = jnp.asarray(token_batch(cfg.vocab_size, (batch, seq), 1))
    cos, sin = model._rope(jnp.arange(seq)[None, :])
    moe_block = model.decoder_layers[-1]
    dense_block = model.decoder_layers[0]

    def timed(layers, fn):
        variables = [v for layer in layers for v in layer.trainable_variables]
        others = [(v, v.value) for layer in layers for v in layer.non_trainable_variables]

        def loss(values, h):
            with keras.StatelessScope(state_mapping=list(zip(variables, values)) + others):
                return fn(h)

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        values = [v.value for v in variables]
        return statistics.median(median_time(lambda: jax.block_until_ready(grad(values, h)), 2, 5))

    def total(out):
        return jnp.sum(out.astype(jnp.float32))

    moe_count, attention_count = cfg.num_moe_layers + cfg.num_nextn_predict_layers, \
        cfg.num_hidden_layers + cfg.num_nextn_predict_layers
    from model.losses import shifted_cross_entropy

    pieces = {
        "MLA attention (fwd+bwd)": (attention_count, [model.decoder_layers[1].self_attn],
                                    lambda x: total(model.decoder_layers[1].self_attn(x, cos, sin, None))),
        "MoE layer: router + routed + shared (fwd+bwd)": (moe_count, [moe_block.mlp],
                                                          lambda x: total(moe_block.mlp(x)[0])),
        "  of which router + routed experts": (moe_count, [moe_block.mlp.experts], lambda x: total(moe_block.mlp.experts(
            jnp.reshape(x, (-1, cfg.hidden_size)), *moe_block.mlp.gate(jnp.reshape(x, (-1, cfg.hidden_size)))[:2]))),
        "dense SwiGLU (fwd+bwd)": (cfg.first_k_dense_replace, [dense_block.mlp], lambda x: total(dense_block.mlp(x))),
        "norm + lm_head + CE (fwd+bwd)": (1 + cfg.num_nextn_predict_layers, [model.norm, model.lm_head],
                                          lambda x: shifted_cross_entropy(model.head(model.norm(x)), ids, 1)),
    }
    out = {}
    for name, (count, layers, fn) in pieces.items():
        try:
            seconds = timed(layers, fn)
            out[name] = dict(ms_each=seconds * 1e3, count=count, ms_per_step=seconds * 1e3 * count)
        except Exception as error:
            out[name] = dict(error=f"{type(error).__name__}: {str(error)[:300]}")
        print(name, out[name], flush=True)
    return {"batch": batch, "pieces": out}


def child_decode_ours(a, s):
    _jax_setup()
    import numpy as np

    from model.jax_steps import GreedyDecoder, cache_bytes_per_token

    start = time.perf_counter()
    model = _load_ours(a.ckpt, "bfloat16", a.impl)
    print(f"loaded in {time.perf_counter() - start:.1f} s", flush=True)
    decoder = GreedyDecoder(model, cache_dtype="bfloat16")
    out = {"cache_bytes_per_token": cache_bytes_per_token(model, "bfloat16"),
           "cache_values_per_token_per_layer": model.cfg.kv_lora_rank + model.cfg.qk_rope_head_dim}
    for batch in s["decode_batches"]:
        prompt = token_batch(model.cfg.vocab_size, (batch, s["prompt"]), seed=100 + batch)
        held = {}
        start = time.perf_counter()
        held["tokens"] = decoder(prompt, s["new_tokens"])  # compiles the prefill and the step
        print(f"batch {batch}: first generate (compiles) {time.perf_counter() - start:.1f} s", flush=True)

        def generate():
            held["tokens"] = decoder(prompt, s["new_tokens"])

        times = median_time(generate, 0, 3)
        tokens = held["tokens"]
        cache = model.init_cache(batch, s["prompt"] + s["new_tokens"], "bfloat16")
        measured = sum(int(np.prod(c.shape)) * c.dtype.itemsize for layer in cache for c in layer)
        out[f"batch_{batch}"] = dict(seconds=statistics.median(times), times=times,
                                     tokens_per_s=batch * s["new_tokens"] / statistics.median(times),
                                     cache_bytes_per_token_measured=measured / (batch * (s["prompt"] + s["new_tokens"])),
                                     first_tokens=np.asarray(tokens)[:, :16].tolist()[:4])
        print(batch, out[f"batch_{batch}"]["tokens_per_s"], flush=True)
    return out


# =================================================================== PyTorch side (transformers)
def _torch_model(ckpt, dtype):
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.DeepseekV3ForCausalLM.from_pretrained(ckpt, dtype=dtype).to(device)
    return model, device


def child_parity_theirs(a, s):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, device = _torch_model(a.ckpt, torch.float32)
    model.eval()
    ids = torch.tensor(token_batch(model.config.vocab_size, s["parity_shape"], seed=11), dtype=torch.long,
                       device=device)
    out = {"experts_implementation": str(getattr(model.config, "_experts_implementation", None)),
           "attn_implementation": str(getattr(model.config, "_attn_implementation", None))}
    with torch.no_grad():
        out["lm_loss_float32"] = float(model(ids, labels=ids).loss)
        with torch.autocast(device, dtype=torch.bfloat16):
            out["lm_loss_bf16"] = float(model(ids, labels=ids).loss)
    return out


def child_train_theirs(a, s, compile_model: bool, weights_dtype: str = "float32"):
    """float32 weights + autocast bf16 (our recipe); with weights_dtype "bfloat16" the
    weights and AdamW state are bf16 too (transformers' grouped_mm experts path needs
    bf16 weights)."""
    import torch

    model, device = _torch_model(a.ckpt, getattr(torch, weights_dtype))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY,
                                  fused=device == "cuda")
    forward = torch.compile(model) if compile_model else model
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    batch = a.batch
    while True:
        ids = torch.tensor(token_batch(model.config.vocab_size, (batch, s["seq"]), seed=batch), dtype=torch.long,
                           device=device)

        def step():
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = forward(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync()
            return loss

        try:
            start = time.perf_counter()
            step()
            first_step_s = time.perf_counter() - start
            break
        except torch.OutOfMemoryError as error:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch == 1:
                raise
            print(f"batch {batch} does not fit: {str(error)[:200]}", flush=True)
            batch = max(1, batch // 2)
    times = median_time(step, s["warmup"], s["steps"])
    step_s = statistics.median(times)
    return dict(batch=batch, seq=s["seq"], step_s=step_s, step_times=times, first_step_s=first_step_s,
                tokens_per_s=batch * s["seq"] / step_s, compiled=compile_model, weights_dtype=weights_dtype,
                experts_implementation=str(getattr(model.config, "_experts_implementation", None)),
                attn_implementation=str(getattr(model.config, "_attn_implementation", None)),
                peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None)


def child_decode_theirs(a, s):
    import torch

    model, device = _torch_model(a.ckpt, torch.bfloat16)
    model.eval()
    cfg = model.config
    # what per-head K/V in bf16 would hold; the cache transformers builds is measured below
    out = {"per_head_kv_bytes_per_token": cfg.num_hidden_layers * cfg.num_attention_heads
           * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim) * 2}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in s["decode_batches"]:
        ids = torch.tensor(token_batch(cfg.vocab_size, (batch, s["prompt"]), seed=100 + batch), dtype=torch.long,
                           device=device)
        result = {}

        def generate():
            with torch.no_grad():
                result["out"] = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=s["new_tokens"],
                                               min_new_tokens=s["new_tokens"], do_sample=False, pad_token_id=0,
                                               return_dict_in_generate=True)
            sync()

        times = median_time(generate, 1, 3)
        measured = None
        try:  # bytes actually held by the cache transformers built
            cache = getattr(result["out"], "cache", None) or result["out"].past_key_values
            held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
            measured = held / (batch * (s["prompt"] + s["new_tokens"] - 1))
            out["cache_bytes_per_token"] = measured
            out["cache_layout"] = [list(cache.layers[0].keys.shape), list(cache.layers[0].values.shape)]
        except Exception as error:
            measured = f"{type(error).__name__}: {error}"
        tokens = result["out"].sequences[:, s["prompt"]:]
        out[f"batch_{batch}"] = dict(seconds=statistics.median(times),
                                     tokens_per_s=batch * s["new_tokens"] / statistics.median(times),
                                     cache_bytes_per_token_measured=measured,
                                     first_tokens=tokens[:, :16].tolist()[:4])
        print(batch, out[f"batch_{batch}"]["tokens_per_s"], flush=True)
    return out


CHILDREN = {
    "checkpoint": child_checkpoint, "parity_ours": child_parity_ours, "experts": child_experts,
    "train_ours": child_train_ours, "pieces": child_pieces, "decode_ours": child_decode_ours,
    "parity_theirs": child_parity_theirs, "decode_theirs": child_decode_theirs,
    "train_theirs_compile": lambda a, s: child_train_theirs(a, s, True),
    "train_theirs_eager": lambda a, s: child_train_theirs(a, s, False),
    "train_theirs_bf16_weights": lambda a, s: child_train_theirs(a, s, False, "bfloat16"),
}


# =================================================================== driver
class Chain:
    """Runs one chain's children one after another, each with a timeout, logging all output."""

    TIMEOUTS = {"checkpoint": 150, "parity_ours": 150, "experts": 150, "train_ours": 280, "pieces": 150,
                "decode_ours": 150, "parity_theirs": 150, "decode_theirs": 150, "train_theirs_compile": 200,
                "train_theirs_eager": 150, "train_theirs_bf16_weights": 150}

    def __init__(self, args, settings_, results, log_path, gpu):
        self.args, self.s, self.results, self.log_path, self.gpu = args, settings_, results, log_path, gpu

    def log(self, text):
        with open(self.log_path, "a") as f:
            f.write(text + "\n")
        print(text, flush=True)

    def run(self, name, **extra):
        left = self.args.deadline - (time.time() - self.args.started)
        limit = 400 if self.args.decode_only and name.startswith("decode") else self.TIMEOUTS[name]
        timeout = min(limit * (0.5 if self.args.quick else 1) + (300 if self.args.quick else 0), left)
        if timeout < 20:
            self.results[name] = {"skipped": "out of time"}
            self.log(f"== {name}: skipped, {left:.0f} s left")
            return None
        env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_MEM_FRACTION="0.94",
                   TF_CPP_MIN_LOG_LEVEL="3")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        command = [sys.executable, os.path.abspath(__file__), "--child", name, "--ckpt", self.args.ckpt,
                   *(["--quick"] if self.args.quick else [])]
        for key, value in extra.items():
            command += [f"--{key}", str(value)]
        self.log(f"== {name} (timeout {timeout:.0f} s, gpu {self.gpu}): {' '.join(command[2:])}")
        start = time.time()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as expired:
            output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
            code = "timeout"
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        noise = [line for line in output.splitlines() if not line.startswith("RESULT ")]
        with open(self.log_path, "a") as f:
            f.write("\n".join(noise[-80:]) + "\n")
        if code == 0 and lines:
            self.results[name] = json.loads(lines[-1][len("RESULT "):])
        else:
            self.results[name] = {"failed": str(code), "tail": noise[-6:]}
        self.results[name]["wall_s"] = round(time.time() - start, 1)
        self.log(f"== {name}: {json.dumps(self.results[name])[:600]}")
        return self.results[name] if code == 0 and lines else None


def jax_chain(args, s, results, log_path, gpu):
    try:
        _jax_chain(Chain(args, s, results, log_path, gpu), args)
    finally:
        results["jax_chain_done"] = True


def _jax_chain(chain, args):
    """Checkpoint, then our parity, training step and decoding (and, when the PyTorch chain
    has no GPU of its own, the expert designs and the step's pieces)."""
    if chain.run("checkpoint") is None:
        return
    if args.decode_only:
        chain.run("decode_ours", impl=args.expert_impl or "grouped_gemm")
        return
    impl = args.expert_impl
    if impl is None:
        impl = (chain.run("experts") or {}).get("best", "capacity")
    chain.run("parity_ours", impl=impl)
    batch = {"batch": args.train_batch} if args.train_batch else {}
    chain.run("train_ours", impl=impl, **batch)
    chain.run("decode_ours", impl=impl)
    if not args.parallel:
        _pieces(chain, args, impl)


def _pieces(chain, args, impl):
    batch = args.train_batch or (chain.results.get("train_ours") or {}).get("batch")
    if batch:
        chain.run("pieces", impl=impl, batch=batch)


def torch_chain(args, s, results, log_path, gpu):
    """transformers' parity, decoding and training step; on a second GPU also our expert
    designs and the step's pieces (JAX children), while the JAX chain runs on the first."""
    chain = Chain(args, s, results, log_path, gpu)
    while not os.path.exists(os.path.join(args.ckpt, "config.json")):  # published by the JAX chain
        if "checkpoint" in results or time.time() - args.started > args.deadline:
            chain.log("no checkpoint: the torch chain stops")
            return
        time.sleep(2)
    if args.decode_only:
        chain.run("decode_theirs")
        return
    chain.run("parity_theirs")
    chain.run("decode_theirs")
    while not args.train_batch and "train_ours" not in results and "jax_chain_done" not in results \
            and time.time() - args.started < args.deadline:
        time.sleep(2)
    batch = args.train_batch or (results.get("train_ours") or {}).get("batch") or s["batch"] or 8
    chain.run("train_theirs_eager", batch=batch)
    if args.parallel:
        if args.expert_impl is not None:
            chain.run("experts")
        _pieces(chain, args, args.expert_impl or "capacity")
    chain.run("train_theirs_bf16_weights", batch=batch)
    if s["compile_torch"]:
        chain.run("train_theirs_compile", batch=batch)


def summarise(results, s) -> list[str]:
    lines = []
    get = lambda *keys: _dig(results, keys)
    ours_loss, theirs_loss = get("parity_ours", "lm_loss_float32"), get("parity_theirs", "lm_loss_float32")
    if ours_loss is not None and theirs_loss is not None:
        lines.append(f"parity, {s['parity_shape']} tokens, main-model CE: float32 ours {ours_loss:.6f} theirs "
                     f"{theirs_loss:.6f} |diff| {abs(ours_loss - theirs_loss):.2e}; bf16 ours "
                     f"{get('parity_ours', 'lm_loss_bf16'):.5f} theirs {get('parity_theirs', 'lm_loss_bf16'):.5f}")
    for name, r in (get("experts", "designs") or {}).items():
        if "error" in r:
            lines.append(f"experts {name:12s} ERROR {r['error'][:150]}")
        else:
            lines.append(f"experts {name:12s} fwd {r['forward_ms']:8.2f} ms {r['forward_tflops']:6.1f} TFLOP/s   "
                         f"fwd+bwd {r['forward_backward_ms']:8.2f} ms {r['forward_backward_tflops']:6.1f} TFLOP/s   "
                         f"rel err out {r['rel_err_out']:.1e} grads {r['rel_err_grads']:.1e}")
    if get("experts", "best"):
        lines.append(f"experts: fastest correct design = {get('experts', 'best')} "
                     f"({get('experts', 'rows')} rows of {get('experts', 'tokens')} tokens)")
    ours = results.get("train_ours") or {}
    theirs = [results.get(n) or {} for n in ("train_theirs_eager", "train_theirs_bf16_weights",
                                              "train_theirs_compile")]
    theirs = [t for t in theirs if t.get("tokens_per_s")]
    if ours.get("tokens_per_s"):
        lines.append(f"train ours: batch {ours['batch']} x {ours['seq']}, {ours['step_s'] * 1e3:.0f} ms/step, "
                     f"{ours['tokens_per_s']:,.0f} tok/s, MFU {100 * ours['mfu']:.1f}% (MTP included; main model "
                     f"only {100 * ours['mfu_main_model_only']:.1f}%), loss {ours['first_loss']:.3f} -> "
                     f"{ours['last_loss']:.3f}")
    for t in theirs:
        ratio = ours["tokens_per_s"] / t["tokens_per_s"] if ours.get("tokens_per_s") else float("nan")
        lines.append(f"train transformers ({'torch.compile' if t['compiled'] else 'eager'}, "
                     f"{t.get('weights_dtype', 'float32')} weights, experts "
                     f"{t['experts_implementation']}, attention {t['attn_implementation']}): batch {t['batch']}, "
                     f"{t['step_s'] * 1e3:.0f} ms/step, {t['tokens_per_s']:,.0f} tok/s; ratio ours/theirs {ratio:.2f}")
    for batch in s["decode_batches"]:
        o, t = get("decode_ours", f"batch_{batch}") or {}, get("decode_theirs", f"batch_{batch}") or {}
        if o.get("tokens_per_s") and t.get("tokens_per_s"):
            same = _agreement(o.get("first_tokens"), t.get("first_tokens"))
            lines.append(f"decode batch {batch:3d}: ours {o['tokens_per_s']:9,.0f} tok/s, transformers "
                         f"{t['tokens_per_s']:9,.0f} tok/s, ratio {o['tokens_per_s'] / t['tokens_per_s']:.2f}; "
                         f"first greedy tokens agree {same}")
    if get("decode_ours", "cache_bytes_per_token"):
        lines.append(f"cache bytes/token (bf16): ours {get('decode_ours', 'cache_bytes_per_token')} "
                     f"({get('decode_ours', 'cache_values_per_token_per_layer')} values/layer), transformers "
                     f"{get('decode_theirs', 'cache_bytes_per_token')} measured (layer 0 keys, values "
                     f"{get('decode_theirs', 'cache_layout')}); per-head K/V would be "
                     f"{get('decode_theirs', 'per_head_kv_bytes_per_token')}")
    for name, r in (get("pieces", "pieces") or {}).items():
        if "error" not in r:
            lines.append(f"piece {name:48s} {r['ms_each']:8.2f} ms x {r['count']:2d} = {r['ms_per_step']:8.1f} ms/step")
    return lines


def _dig(d, keys):
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _agreement(a, b) -> str:
    if not a or not b:
        return "n/a"
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return f"{sum(x == y for x, y in pairs)}/{len(pairs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, short runs (CPU check)")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "artifacts", "bench_gpu"))
    parser.add_argument("--deadline", type=float, default=560, help="seconds for the whole run")
    parser.add_argument("--sequential", action="store_true", help="one chain after the other even with 2 GPUs")
    parser.add_argument("--train-batch", type=int, help="training batch (default: sized from XLA's memory plan)")
    parser.add_argument("--expert-impl", help="our expert design (default: the fastest the experts section "
                                              "measured; given, that section runs beside the JAX chain)")
    parser.add_argument("--decode-only", action="store_true",
                        help="only the checkpoint and the two decode sections (each may then take 400 s)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="capacity", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = settings(args.quick)
    if args.quick:
        args.deadline = max(args.deadline, 3000)
    if args.child:
        print("RESULT " + json.dumps(CHILDREN[args.child](args, s)), flush=True)
        return

    import threading

    os.makedirs(args.out, exist_ok=True)
    args.started = time.time()
    args.ckpt = os.path.join("/tmp", f"seekforge_bench_ckpt_{os.getpid()}")
    gpus = _gpu_count()
    results: dict = {"settings": s, "gpus": gpus, "peak_flops": PEAK_FLOPS, "versions": _versions()}
    print(json.dumps({k: results[k] for k in ("gpus", "versions")}), flush=True)
    jax_log, torch_log = os.path.join(args.out, "jax_chain.log"), os.path.join(args.out, "torch_chain.log")
    args.parallel = gpus >= 2 and not args.sequential
    if args.parallel:
        threads = [threading.Thread(target=jax_chain, args=(args, s, results, jax_log, 0)),
                   threading.Thread(target=torch_chain, args=(args, s, results, torch_log, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        jax_chain(args, s, results, jax_log, 0 if gpus else None)
        torch_chain(args, s, results, torch_log, 0 if gpus else None)
    lines = summarise(results, s)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(["", "==== summary ===="] + lines), flush=True)


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return sum(line.startswith("GPU ") for line in out.stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        return 0


def _versions() -> str:
    out = subprocess.run([sys.executable, "-c", "import jax, torch, transformers, keras, platform; print("
                          "f'python {platform.python_version()}, jax {jax.__version__}, keras {keras.__version__}, "
                          "torch {torch.__version__}, transformers {transformers.__version__}, devices {jax.devices()}')"],
                         capture_output=True, text=True, env=dict(os.environ, KERAS_BACKEND="jax"))
    return (out.stdout.strip() or out.stderr.strip()[-300:])


if __name__ == "__main__":
    main()
