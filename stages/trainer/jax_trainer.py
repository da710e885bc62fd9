"""The JAX trainer: the training loop of stages/trainer/loop.py on a device mesh, with
expert parallelism and ZeRO-sharded states (jax_parallel.py, jax_step.py), sharded
resumable checkpoints (sharded_checkpoint.py) and several processes (multihost.py).

    trainer = JaxTrainer(model_config, training_config, output_dir)
    trainer.fit(shard_dir, eos_id)     # resumes from output_dir/checkpoints if there are any
    model = trainer.trained_model()    # a plain Keras model holding the trained weights (export)

A run killed at any point and started again continues from its newest checkpoint on the
same batches (packed_rows.py derives them from the seed and the step), so it follows the
loss curve of an uninterrupted run. Process 0 writes metrics.jsonl and prints progress.
"""

import os
import time

import jax
import keras
import numpy as np

from model.balancing import max_violation
from model.fp8 import dtype_policy
from model.transformer import DeepSeekV3CausalLM
from stages.trainer import jax_parallel, model_checkpoint, multihost, sharded_checkpoint
from stages.trainer.adamw import make_optimizer
from stages.trainer.jax_step import ParallelStep
from stages import termination
from stages.trainer import metrics_log
from stages.trainer.metrics_log import METRICS_FILE, truncate_metrics
from stages.trainer.packed_rows import PackedRows
from stages.trainer.progress import Progress
from stages.trainer.schedule import WarmupConstantCosine

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
            self.model = DeepSeekV3CausalLM(model_config, dtype=dtype_policy(cfg.precision))
            self.optimizer = make_optimizer(cfg, self.model)
        self.step_fn = ParallelStep(self.model, self.optimizer, cfg, self.mesh)
        # the optimizer's own variables are donated to the step: read the rate from here
        self.schedule = WarmupConstantCosine.from_training_config(cfg)

    def fit(self, shard_dir: str, eos_id: int, init_weights: str | None = None) -> dict:
        """Train to cfg.steps, resuming from the newest checkpoint in output_dir if any.
        init_weights: the prefix of a model checkpoint (an upstream stage's
        checkpoint/final, model_checkpoint.py) to start a fresh run from; the optimizer
        starts fresh. Returns the last logged metrics."""
        cfg = self.cfg
        rows = PackedRows(shard_dir, cfg.seq_len, eos_id, cfg.seed, cfg.mask_documents)
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        state, step = self.start(init_weights)
        if self.chief:
            truncate_metrics(os.path.join(self.output_dir, METRICS_FILE), step)
        micro_size = cfg.global_batch_size // cfg.micro_batches
        last, window_start, window_tokens = {}, time.perf_counter(), 0
        self.progress = Progress(cfg.steps, step)
        while step < cfg.steps:
            termination.check()
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

    def start(self, init_weights: str | None = None):
        """(state, step) that fit starts from: the newest checkpoint's, laid out on this
        mesh, else the initial state, with the model's values from init_weights if given."""
        directory = os.path.join(self.output_dir, CHECKPOINTS)
        initial = self.step_fn.initial_state()
        step = sharded_checkpoint.latest_step(directory) if os.path.isdir(directory) else None
        if step is None and init_weights:
            return self._initialised_from(init_weights, initial), 0
        if step is None:
            return self.step_fn.place(initial), 0
        target = jax.tree.map(lambda value, sharding: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding),
                              initial, self.step_fn.shardings)
        if self.chief:
            print(f"resuming from step {step} ({sharded_checkpoint.step_directory(directory, step)})", flush=True)
        return sharded_checkpoint.restore(directory, step, target), step

    def _initialised_from(self, prefix: str, initial):
        """The initial state with every model value read from the checkpoint at `prefix`,
        each built on its sharding from the slices this process's devices hold."""
        model, shardings = self.model, self.step_fn.shardings
        variables = model.trainable_variables + model.non_trainable_variables
        values = model_checkpoint.read_values(prefix, {model_checkpoint.variable_path(v): tuple(v.shape)
                                                       for v in variables})
        placed = []
        for variable, sharding in zip(variables, shardings[0] + shardings[1]):
            value = np.asarray(values[model_checkpoint.variable_path(variable)], dtype=variable.dtype)
            placed.append(jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index]))
        trained = len(model.trainable_variables)
        if self.chief:
            print(f"initialised from {prefix}", flush=True)
        return placed[:trained], placed[trained:], jax.device_put(initial[2], shardings[2])

    def trained_model(self) -> keras.Model:
        """A model on this host's CPU, outside the mesh, holding the values of
        `self.state` (after fit): what the training stages export (model.save_weights,
        checkpoint/final). Every process must call it: the sharded values are gathered
        onto every process first."""
        model = self.model
        variables = model.trainable_variables + model.non_trainable_variables
        values = {model_checkpoint.variable_path(v): _gathered(value)
                  for v, value in zip(variables, self.state[0] + self.state[1])}
        with jax.default_device(_host_device()):
            exported = DeepSeekV3CausalLM(self.model_config, dtype=dtype_policy(self.cfg.precision))
            for variable in exported.variables:
                variable.assign(values[model_checkpoint.variable_path(variable)])
        return exported

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
            metrics_log.record(self.output_dir, step, metrics, self.progress, self.log_metrics)
        return metrics


def _gathered(array) -> np.ndarray:
    """The whole value of a sharded array, on every process."""
    if array.is_fully_addressable:
        return np.asarray(array)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _host_device():
    """This process's first CPU device (the accelerators keep the training state)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:   # no CPU backend (JAX_PLATFORMS names only accelerators)
        return jax.local_devices()[0]
