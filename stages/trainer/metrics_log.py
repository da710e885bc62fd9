"""metrics.jsonl, the training stages' log of metrics by step (no TensorFlow)."""

import json
import os

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(path: str, step: int) -> None:
    """Keep the logged metrics of steps <= `step` (the resumed step): a killed run logged
    steps after its last checkpoint, and the resumed run logs them again."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def record(output_dir: str, step: int, metrics: dict, progress, log_metrics=None) -> None:
    """What the chief does with a step's metrics: a progress line (per-layer values left
    out), a line of metrics.jsonl, and the caller's logger (MLflow)."""
    print(f"{progress.prefix(step)}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/moe_" not in k),
          flush=True)
    with open(os.path.join(output_dir, METRICS_FILE), "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
    if log_metrics:
        log_metrics(metrics, step)
