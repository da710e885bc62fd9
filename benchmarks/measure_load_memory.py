"""Peak memory of load_hf on a test-made checkpoint of a few hundred MB.

    .venv/bin/python benchmarks/measure_load_memory.py [--dtype bfloat16|float32]

Writes a random checkpoint (hub layout) in one process, then in a fresh process builds
the model and streams the checkpoint into it while a thread samples RSS every 2 ms.
Reports RSS before streaming (the model built: what any loader pays) and the peak while
streaming, next to the model's float32 size, the checkpoint size and its largest tensor.
Streaming means the increase stays near the largest tensor (plus one stacked expert
variable's buffer), not the checkpoint size.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIG = dict(vocab_size=16384, hidden_size=1024, intermediate_size=2816, moe_intermediate_size=512,
              num_hidden_layers=4, first_k_dense_replace=1, num_attention_heads=8, q_lora_rank=384,
              kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, n_routed_experts=16,
              num_experts_per_tok=4, n_group=4, topk_group=2, num_nextn_predict_layers=1)
MB = 1024**2


def _write(directory: str, dtype: str) -> None:
    from model.config import ModelConfig
    from model.convert import save_hf
    from model.transformer import DeepSeekV3CausalLM

    save_hf(DeepSeekV3CausalLM(ModelConfig(**CONFIG)), directory, dtype=dtype, max_shard_bytes=2 * 1024**3)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb(field: str = "VmRSS") -> float:
    """Resident memory from /proc: VmRSS in all, RssAnon (process memory) or RssFile
    (file pages mapped in, e.g. a memory-mapped checkpoint; the kernel can drop them)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load(directory: str) -> None:
    """Build the model, then stream the checkpoint into it, sampling RSS every 2 ms."""
    import threading
    import time

    from model.config import ModelConfig
    from model.convert import _inventory, _Plan, _stream_into
    from model.transformer import DeepSeekV3CausalLM

    plan = _Plan(ModelConfig.from_hf(directory), _inventory(directory), (128, 128), "auto", directory)
    model = DeepSeekV3CausalLM(plan.cfg)
    fields = ("VmRSS", "RssAnon", "RssFile")
    before = {f: _current_rss_mb(f) for f in fields}
    peak, done = dict(before), threading.Event()

    def sample():
        while not done.is_set():
            for f in fields:
                peak[f] = max(peak[f], _current_rss_mb(f))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _stream_into(model, plan)
    done.set()
    sampler.join()
    print(json.dumps({"build_peak_mb": _peak_rss_mb(), "before": before, "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _load(args.child)
    from model.config import ModelConfig, hf_weight_shapes

    shapes = hf_weight_shapes(ModelConfig(**CONFIG))
    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "ckpt")
        _write(directory, args.dtype)
        on_disk = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        out = subprocess.run([sys.executable, __file__, "--child", directory], check=True, capture_output=True,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        result = json.loads(out.stdout.strip().splitlines()[-1])
    shared_copies = (f"model.layers.{CONFIG['num_hidden_layers']}.embed_tokens.weight",
                     f"model.layers.{CONFIG['num_hidden_layers']}.shared_head.head.weight")
    model_mb = sum(math.prod(s) for n, s in shapes.items() if n not in shared_copies) * 4 / MB
    largest = max(math.prod(s) for s in shapes.values()) * 4 / MB
    expert_variable = CONFIG["n_routed_experts"] * CONFIG["hidden_size"] * CONFIG["moe_intermediate_size"] * 4 / MB
    print(f"checkpoint on disk ({args.dtype}): {on_disk / MB:.0f} MB")
    print(f"model variables (float32): {model_mb:.0f} MB; largest tensor (as float32): {largest:.0f} MB; "
          f"one stacked expert variable: {expert_variable:.0f} MB")
    print(f"peak RSS while building the model (random init, before any loading): {result['build_peak_mb']:.0f} MB")
    for field in ("VmRSS", "RssAnon", "RssFile"):
        before, peak = result["before"][field], result["peak"][field]
        print(f"{field:8s} before streaming {before:6.0f} MB, peak while streaming {peak:6.0f} MB "
              f"(+{peak - before:.0f} MB)")


if __name__ == "__main__":
    main()
