"""The training loop: one optimizer step = m micro-batches per replica, read from a
distributed iterator inside one tf.function and run with strategy.run.

Per step, on every replica:
1. read m micro-batches; count valid targets; all-reduce the counts so each micro-batch's
   loss is divided by the GLOBAL count (summed parts = the global mean, exactly);
2. forward + backward per micro-batch (optionally XLA-compiled), gradients accumulated;
3. all-reduce gradients and expert loads (sums); clip by the global norm of the summed
   gradient; AdamW update; router biases += gamma * sign(mean load - load), the same
   update on every replica since the loads were summed over all of them.

Keras' optimizer all-reduces (sums) gradients itself and clips before that reduction, so
the loop clips the already-reduced gradient and hands the optimizer gradient / replicas.
"""

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from model.balancing import max_violation
from model.config import ModelConfig
from model.fp8 import dtype_policy
from model.losses import causal_lm_loss, distillation_loss, target_counts
from model.transformer import DeepSeekV3CausalLM
from stages.trainer.config import TrainingConfig
from stages.trainer.distribution import is_chief, make_strategy
from stages.trainer.input import training_dataset
from stages.trainer.adamw import make_optimizer
from stages import termination
from stages.trainer import metrics_log
from stages.trainer.metrics_log import METRICS_FILE, truncate_metrics
from stages.trainer.optimizer import resumable
from stages.trainer.progress import Progress



def _remat_scope(model_config: ModelConfig, enabled: bool):
    """Per-block activation recomputation: each decoder block (and MTP block) keeps only
    its input for the backward pass and recomputes the rest."""
    if not enabled:
        return contextlib.nullcontext()
    blocks = [f"layers_{i}" for i in range(model_config.num_hidden_layers)] + ["block"]
    return keras.RematScope(mode="list_of_layers", layer_names=blocks)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """Logit-level distillation: the loss becomes (1 - weight) x the LM loss + weight x
    the divergence between this frozen model's next-token distributions and the
    student's (model.losses.distillation_loss)."""
    model: keras.Model
    divergence: str = "forward_kl"
    temperature: float = 1.0
    weight: float = 1.0


class Trainer:
    def __init__(self, model_config: ModelConfig, cfg: TrainingConfig, output_dir: str,
                 strategy: tf.distribute.Strategy | None = None, log_metrics=None, teacher: Teacher | None = None,
                 section: str = "pretrain"):
        """section: the config section cfg comes from, named in errors about it."""
        if not cfg.distribution.is_default:
            mesh = cfg.distribution
            raise ValueError(f"{section}.distribution is a data {mesh.data} x expert {mesh.expert} device mesh, "
                             "which only the JAX trainer runs: run with KERAS_BACKEND=jax, or leave "
                             f"{section}.distribution at data 1 (or -1) x expert 1 for the TensorFlow trainer, "
                             f"whose parallelism is {section}.strategy")
        self.model_config, self.cfg, self.output_dir, self.teacher = model_config, cfg, output_dir, teacher
        self.strategy = strategy or make_strategy(cfg.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        per_step = cfg.global_batch_size // cfg.micro_batches
        if per_step % self.replicas:
            raise ValueError(f"global_batch_size / micro_batches ({per_step}) is not divisible by the "
                             f"{self.replicas} replicas")
        self.micro_batch_per_replica = per_step // self.replicas
        self.log_metrics = log_metrics
        self.chief = is_chief(self.strategy)
        os.makedirs(output_dir, exist_ok=True)
        keras.utils.set_random_seed(cfg.seed)
        with self.strategy.scope(), _remat_scope(model_config, cfg.remat):
            self.model = DeepSeekV3CausalLM(model_config, dtype=dtype_policy(cfg.precision))
            self.optimizer = make_optimizer(cfg, self.model)
        self._forward_backward = tf.function(self._forward_backward_impl, jit_compile=cfg.jit_compile,
                                             reduce_retracing=True)
        self._steps = {}

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # ------------------------------------------------------------------ data
    def shard_batches(self, shard_dir: str, eos_id: int):
        """The batch source of pretraining: the packed shards of `tokenize`."""
        cfg = self.cfg

        def batches(batch_size, context, skip_batches):
            return training_dataset(shard_dir, cfg.seq_len, batch_size, cfg.seed, eos_id, cfg.mask_documents,
                                    context, skip_batches=skip_batches, sharding=cfg.input_sharding)
        return batches

    def dataset(self, batches, start_step: int = 0):
        """The distributed input, positioned after the micro-batches of steps [0, start_step).

        batches(batch_size, input_context, skip_batches) -> an endless tf.data.Dataset of
        feature dicts (token_ids, segment_ids, position_ids, loss_mask) for one input
        pipeline. The data position is derived from the step rather than saved: the
        pipeline's order is a function of the seed, so skipping what earlier steps consumed
        puts a resumed run on exactly the batches an uninterrupted one would see.
        """
        consumed = sum(self.micro_batches_at(step) for step in range(start_step))
        return self.strategy.distribute_datasets_from_function(
            lambda context: batches(self.micro_batch_per_replica, context, consumed))

    def micro_batches_at(self, step: int) -> int:
        """Micro-batches in step `step`: all of them, or fewer while the batch size ramps."""
        cfg = self.cfg
        if not cfg.batch_ramp_steps or step >= cfg.batch_ramp_steps:
            return cfg.micro_batches
        batch = cfg.batch_ramp_start + (cfg.global_batch_size - cfg.batch_ramp_start) * step / cfg.batch_ramp_steps
        return int(min(cfg.micro_batches, max(1, np.ceil(batch / (cfg.global_batch_size // cfg.micro_batches)))))

    # ------------------------------------------------------------------ one step
    def _forward_backward_impl(self, batch, counts, balance_weight):
        cfg, model = self.cfg, self.model
        with tf.GradientTape() as tape:
            out = model(batch["token_ids"], segment_ids=batch["segment_ids"] if cfg.mask_documents else None,
                        position_ids=batch["position_ids"], return_aux=True)
            parts = causal_lm_loss(out, batch["token_ids"], cfg.mtp_lambda, cfg.balance_alpha,
                                   loss_mask=batch["loss_mask"], segment_ids=batch["segment_ids"],
                                   target_counts=counts, balance_weight=balance_weight)
            if self.teacher is not None:
                parts = self._with_distillation(parts, out["logits"], batch, counts)
        # dense gradients (the embedding's arrive as IndexedSlices) so micro-batches add up
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(parts["loss"], model.trainable_variables)]
        return grads, parts, out["expert_loads"]

    def _with_distillation(self, parts, logits, batch, counts):
        teacher = self.teacher
        segments = batch["segment_ids"] if self.cfg.mask_documents else None
        teacher_logits = teacher.model(batch["token_ids"], segment_ids=segments, position_ids=batch["position_ids"])
        divergence = distillation_loss(logits, teacher_logits, batch["token_ids"], teacher.divergence,
                                       teacher.temperature, batch["loss_mask"], batch["segment_ids"], counts[0])
        loss = (1.0 - teacher.weight) * parts["loss"] + teacher.weight * divergence
        return {**parts, "loss": loss, "distill_loss": divergence}

    def _replica_step(self, micro_batches):
        cfg, model = self.cfg, self.model
        context = tf.distribute.get_replica_context()
        depth = self.model_config.num_nextn_predict_layers
        counts = tf.add_n([target_counts(b["token_ids"], depth, b["loss_mask"], b["segment_ids"])
                           for b in micro_batches])
        counts = context.all_reduce(tf.distribute.ReduceOp.SUM, counts)
        balance_weight = 1.0 / (len(micro_batches) * self.replicas)
        grads, totals, loads = self._forward_backward(micro_batches[0], counts, balance_weight)
        for batch in micro_batches[1:]:
            more_grads, more_totals, more_loads = self._forward_backward(batch, counts, balance_weight)
            grads = [a + b for a, b in zip(grads, more_grads)]
            totals = {k: totals[k] + more_totals[k] for k in totals}
            loads = loads + more_loads
        grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        loads = context.all_reduce(tf.distribute.ReduceOp.SUM, loads)
        totals = context.all_reduce(tf.distribute.ReduceOp.SUM, totals)
        grads, grad_norm = tf.clip_by_global_norm(grads, cfg.clip_norm)
        self.optimizer.apply([g / self.replicas for g in grads], model.trainable_variables)
        if cfg.bias_update_gamma:
            model.update_router_biases(loads, cfg.bias_update_gamma)
        return {**totals, "grad_norm": grad_norm, "expert_loads": loads}

    def _step_fn(self, micro: int):
        if micro not in self._steps:
            @tf.function
            def step(iterator):
                batches = [next(iterator) for _ in range(micro)]
                result = self.strategy.run(self._replica_step, args=(batches,))
                # every replica holds the same all-reduced values: take the first
                return self.strategy.experimental_local_results(result)[0]
            self._steps[micro] = step
        return self._steps[micro]

    # ------------------------------------------------------------------ the run
    def fit(self, shard_dir: str, eos_id: int, init_weights: str | None = None,
            discard_unreadable: bool = False) -> dict:
        """Pretraining: fit_on the packed shards of `tokenize`."""
        return self.fit_on(self.shard_batches(shard_dir, eos_id), init_weights, discard_unreadable)

    def fit_on(self, batches, init_weights: str | None = None, discard_unreadable: bool = False) -> dict:
        """Train to cfg.steps on `batches` (see `dataset`), resuming from the newest
        checkpoint in output_dir if any. init_weights: a checkpoint prefix (an upstream
        stage's) to start a fresh run from. Returns the last logged metrics."""
        cfg = self.cfg
        directory = os.path.join(self.output_dir, "checkpoints")
        if not self.chief:  # other workers write where nobody reads (the TF multi-worker pattern)
            directory = os.path.join(self.output_dir, f"checkpoints-worker-{self.strategy.cluster_resolver.task_id}")
        checkpoint, manager = resumable(self.model, self.optimizer, directory, cfg.keep_checkpoints, init_weights,
                                        discard_unreadable)
        step = self.step
        if self.chief:
            truncate_metrics(os.path.join(self.output_dir, METRICS_FILE), step)
        iterator = iter(self.dataset(batches, start_step=step))
        last, window_start, window_tokens = {}, time.perf_counter(), 0
        self.progress = Progress(cfg.steps, step)
        while step < cfg.steps:
            termination.check()
            micro = self.micro_batches_at(step)
            result = self._step_fn(micro)(iterator)
            step += 1
            window_tokens += micro * self.micro_batch_per_replica * self.replicas * cfg.seq_len
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = time.perf_counter() - window_start
                last = self._log(step, result, window_tokens / elapsed)
                window_start, window_tokens = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                manager.save(checkpoint_number=step)
        return last

    def _log(self, step: int, result: dict, tokens_per_second: float) -> dict:
        loads = result["expert_loads"].numpy()
        metrics = {k: float(result[k]) for k in ("loss", "lm_loss", "mtp_loss", "balance_loss", "distill_loss",
                                                 "grad_norm") if k in result}
        metrics["learning_rate"] = float(self.optimizer.learning_rate)
        metrics["tokens_per_second"] = tokens_per_second
        for index, vio in enumerate(max_violation(loads).numpy()):
            metrics[f"max_violation/moe_{index}"] = float(vio)
        metrics["max_violation/mean"] = float(max_violation(loads).numpy().mean())
        if self.chief:
            metrics_log.record(self.output_dir, step, metrics, self.progress, self.log_metrics)
        return metrics
