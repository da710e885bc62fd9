"""The JAX trainer: the training loop of stages/trainer/loop.py on a device mesh, with
expert parallelism and ZeRO-sharded states (jax_parallel.py, jax_step.py), sharded
resumable checkpoints (sharded_checkpoint.py) and several processes (multihost.py).

    trainer = JaxTrainer(model_config, training_config, output_dir)
    trainer.fit(shard_dir, eos_id)     # resumes from output_dir/checkpoints if there are any

A run killed at any point and started again continues from its newest checkpoint on the
same batches (packed_rows.py derives them from the seed and the step), so it follows the
loss curve of an uninterrupted run. Process 0 writes metrics.jsonl and prints progress.
"""

import json
import os
import time

import jax
import keras
import numpy as np

from model.balancing import max_violation
from model.transformer import DeepSeekV3CausalLM
from stages.trainer import jax_parallel, multihost, sharded_checkpoint
from stages.trainer.adamw import make_optimizer
from stages.trainer.jax_step import ParallelStep
from stages.trainer.metrics_log import truncate_metrics
from stages.trainer.packed_rows import PackedRows
from stages.trainer.progress import Progress
from stages.trainer.schedule import WarmupConstantCosine

METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


class JaxTrainer:
    def __init__(self, model_config, cfg, output_dir: str, log_metrics=None, devices=None):
        if keras.backend.backend() != "jax":
            raise ValueError("the JAX trainer needs KERAS_BACKEND=jax")
        if cfg.batch_ramp_steps:
            raise ValueError("batch_ramp_steps: the JAX trainer has no batch-size ramp yet (the TensorFlow one has)")
        multihost.initialize_from_environment()
        self.model_config, self.cfg, self.output_dir, self.log_metrics = model_config, cfg, output_dir, log_metrics
        self.chief = jax.process_index() == 0
        jax_parallel.check_routing_fits_mesh(model_config, cfg.distribution)
        self.mesh = jax_parallel.make_mesh(cfg.distribution, devices)
        devices_in_mesh = self.mesh.devices.size
        if cfg.global_batch_size // cfg.micro_batches % devices_in_mesh:
            raise ValueError(f"global_batch_size / micro_batches ({cfg.global_batch_size // cfg.micro_batches}) "
                             f"is not divisible by the {devices_in_mesh} devices of the mesh")
        os.makedirs(output_dir, exist_ok=True)
        keras.utils.set_random_seed(cfg.seed)
        with jax_parallel.expert_parallel(self.mesh, cfg.distribution):
            dtype = "mixed_bfloat16" if cfg.mixed_precision else "float32"
            self.model = DeepSeekV3CausalLM(model_config, dtype=dtype)
            self.optimizer = make_optimizer(cfg, self.model)
        self.step_fn = ParallelStep(self.model, self.optimizer, cfg, self.mesh)
        # the optimizer's own variables are donated to the step: read the rate from here
        self.schedule = WarmupConstantCosine.from_training_config(cfg)

    def fit(self, shard_dir: str, eos_id: int) -> dict:
        cfg = self.cfg
        rows = PackedRows(shard_dir, cfg.seq_len, eos_id, cfg.seed, cfg.mask_documents)
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        state, step = self._resume(directory)
        if self.chief:
            truncate_metrics(os.path.join(self.output_dir, METRICS_FILE), step)
        micro_size = cfg.global_batch_size // cfg.micro_batches
        last, window_start, window_tokens = {}, time.perf_counter(), 0
        self.progress = Progress(cfg.steps, step)
        while step < cfg.steps:
            state, result = self.step_fn(state, rows.step_batches(step, cfg.micro_batches, micro_size))
            step += 1
            window_tokens += cfg.global_batch_size * cfg.seq_len
            if step % cfg.log_every == 0 or step == cfg.steps:
                last = self._log(step, result, window_tokens / (time.perf_counter() - window_start))
                window_start, window_tokens = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                sharded_checkpoint.save(directory, step, state, keep=cfg.keep_checkpoints)
        self.state = state
        return last

    def _resume(self, directory: str):
        """(state, step): the newest checkpoint's, laid out on this mesh, or the initial one."""
        initial = self.step_fn.initial_state()
        step = sharded_checkpoint.latest_step(directory) if os.path.isdir(directory) else None
        if step is None:
            return self.step_fn.place(initial), 0
        target = jax.tree.map(lambda value, sharding: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding),
                              initial, self.step_fn.shardings)
        if self.chief:
            print(f"resuming from step {step} ({sharded_checkpoint.step_directory(directory, step)})", flush=True)
        return sharded_checkpoint.restore(directory, step, target), step

    def _log(self, step: int, result: dict, tokens_per_second: float) -> dict:
        loads = np.asarray(result["expert_loads"])
        metrics = {k: float(result[k]) for k in ("loss", "lm_loss", "mtp_loss", "balance_loss", "grad_norm")}
        metrics["learning_rate"] = float(self.schedule(step - 1))   # the rate step `step` used
        metrics["tokens_per_second"] = tokens_per_second
        metrics["dropped_assignments"] = float(result["dropped_assignments"])
        violations = np.asarray(max_violation(loads))
        for index, vio in enumerate(violations):
            metrics[f"max_violation/moe_{index}"] = float(vio)
        metrics["max_violation/mean"] = float(violations.mean())
        if self.chief:
            print(f"{self.progress.prefix(step)}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                                if "/moe_" not in k), flush=True)
            with open(os.path.join(self.output_dir, METRICS_FILE), "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")
            if self.log_metrics:
                self.log_metrics(metrics, step)
        return metrics

