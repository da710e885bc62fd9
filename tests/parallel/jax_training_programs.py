"""What the JAX trainer tests run in fresh processes (tests/stages/trainer/multihost_launch.py
starts them with their devices and, for several processes, jax.distributed)."""

import json
import os


def train(model: dict, training: dict, shard_dir: str, output_dir: str) -> dict:
    """Train the JaxTrainer to training["steps"]; -> {"losses": {step: loss}} as logged."""
    from model.config import ModelConfig
    from stages.config import from_dict
    from stages.trainer.config import TrainingConfig
    from stages.trainer.jax_trainer import METRICS_FILE, JaxTrainer

    cfg = from_dict(TrainingConfig, training, "pretrain")
    JaxTrainer(ModelConfig(**model), cfg, output_dir).fit(shard_dir, eos_id=1)
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.exists(path):   # processes other than 0 log nothing
        return {"losses": {}}
    with open(path) as f:
        return {"losses": {str(r["step"]): r["loss"] for r in map(json.loads, f)}}
