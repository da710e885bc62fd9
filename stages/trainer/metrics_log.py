"""metrics.jsonl, the training stages' log of metrics by step (no TensorFlow)."""

import json
import os


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
