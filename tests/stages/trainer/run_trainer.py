"""Runs the trainer in its own process (for tests that kill it, or that need TF
configured before start-up): python run_trainer.py SPEC.json

SPEC: {"model": ModelConfig fields, "training": TrainingConfig fields, "shards": dir,
"output": dir, "logical_cpus": n (optional), "weights_out": path.npz, may hold {task} (optional),
"lost_stop_at_step": n (optional: a SIGTERM whose exception Python drops, after step n's log)}"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(spec_path: str) -> None:
    import numpy as np
    import tensorflow as tf

    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("logical_cpus"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    from model.config import ModelConfig
    from stages.trainer.config import TrainingConfig
    from stages.trainer.loop import Trainer

    trainer = Trainer(ModelConfig(**spec["model"]), TrainingConfig(**spec["training"]), spec["output"],
                      log_metrics=lost_stop(spec["lost_stop_at_step"]) if spec.get("lost_stop_at_step") else None)
    trainer.fit(spec["shards"], eos_id=1)
    if spec.get("weights_out"):  # "{task}" in the path: one file per worker
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
        np.savez(spec["weights_out"].format(task=task),
                 **{v.path.split("/", 1)[1]: v.numpy() for v in trainer.model.variables})


def lost_stop(at_step: int):
    """A metrics logger that, at `at_step`, delivers SIGTERM where its exception is dropped."""
    import signal

    from stages import termination
    from tests.stages.lost_signal import send_inside_gc_callback
    termination.install()

    def log_metrics(metrics, step):
        if step == at_step:
            send_inside_gc_callback(signal.SIGTERM)
    return log_metrics


if __name__ == "__main__":
    main(sys.argv[1])
