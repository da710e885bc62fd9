"""One optimizer step of the JAX trainer, jit-compiled over the device mesh.

The same objective and update as the TensorFlow loop (stages/trainer/loop.py): m
micro-batches, each micro-batch's loss divided by the step's total target count (so the
summed parts are the global mean), gradients accumulated, clipped by their global norm,
AdamW, then router biases += gamma * sign(mean load - load) from the loads of the whole
step. Under a mesh the batch is split over every device; the loads and the gradient norm
are then global sums because XLA reduces over the mesh, so every device applies the same
bias update (Megatron likewise all-reduces the loads first).

    step = ParallelStep(model, optimizer, train_cfg, mesh)   # mesh None: one device
    state = step.place(step.initial_state())
    state, metrics = step(state, batch)    # batch: dict of [m, sequences, seq_len] int32
"""

import contextlib

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from model.balancing import bias_update
from model.losses import causal_lm_loss, target_counts
from stages.trainer import jax_parallel

BATCH_KEYS = ("token_ids", "segment_ids", "position_ids", "loss_mask")


class ParallelStep:
    def __init__(self, model, optimizer, cfg, mesh=None):
        """cfg: a TrainingConfig; mesh: a keras DeviceMesh from jax_parallel.make_mesh, and
        the model built inside jax_parallel.expert_parallel(mesh, ...) when it has experts
        to split."""
        self.model, self.optimizer, self.cfg, self.mesh = model, optimizer, cfg, mesh
        bias_paths = [moe.gate.e_score_correction_bias.path for moe in model.moe_layers()]
        self.bias_slots = [[v.path for v in model.non_trainable_variables].index(p) for p in bias_paths]
        self.depth = model.cfg.num_nextn_predict_layers
        if mesh is None:
            self.shardings, self.batch_sharding = None, None
            self._step = jax.jit(self._step_impl, donate_argnums=0)
        else:
            self.shardings = jax_parallel.state_shardings(model, optimizer, mesh, cfg.distribution.zero)
            self.batch_sharding = jax_parallel.batch_sharding(mesh)
            replicated = NamedSharding(mesh.backend_mesh, P())
            self._step = jax.jit(self._step_impl, donate_argnums=0,
                                 in_shardings=(self.shardings, self.batch_sharding),
                                 out_shardings=(self.shardings, replicated))

    def initial_state(self):
        """(trainable, non-trainable, optimizer) values of the model and optimizer now."""
        return ([v.value for v in self.model.trainable_variables],
                [v.value for v in self.model.non_trainable_variables],
                [v.value for v in self.optimizer.variables])

    def place(self, state):
        """The state laid out as the step expects (a no-op without a mesh)."""
        return state if self.shardings is None else jax.device_put(state, self.shardings)

    def place_batch(self, batch: dict):
        return {k: jax.device_put(batch[k], self.batch_sharding) if self.batch_sharding else jnp.asarray(batch[k])
                for k in BATCH_KEYS}

    def __call__(self, state, batch: dict):
        return self._execute(state, self.place_batch(batch))

    def lower(self, state, batch: dict):
        """The step lowered for these shapes (.compile().memory_analysis(): XLA's memory plan)."""
        with self._scope():
            return self._step.lower(state, self.place_batch(batch))

    def _execute(self, state, batch):
        with self._scope():
            return self._step(state, batch)

    def _scope(self):
        """The distribution is read while tracing: RoutedExperts then dispatches by all-to-all."""
        return contextlib.nullcontext() if self.mesh is None else \
            jax_parallel.expert_parallel(self.mesh, self.cfg.distribution)

    # ------------------------------------------------------------------ traced
    def _loss(self, trainable, non_trainable, batch, counts, balance_weight):
        cfg = self.cfg
        segments = batch["segment_ids"] if cfg.mask_documents else None
        out, _ = self.model.stateless_call(trainable, non_trainable, batch["token_ids"], segment_ids=segments,
                                           position_ids=batch["position_ids"], return_aux=True)
        parts = causal_lm_loss(out, batch["token_ids"], cfg.mtp_lambda, cfg.balance_alpha,
                               loss_mask=batch["loss_mask"], segment_ids=batch["segment_ids"],
                               target_counts=counts, balance_weight=balance_weight)
        return parts["loss"], (parts, out["expert_loads"], out["dropped_assignments"])

    def _gradients(self, state, batch):
        """-> (clipped gradients, metrics) of one step's micro-batches."""
        trainable, non_trainable, _ = state
        micro = batch["token_ids"].shape[0]
        micro_batches = [{k: v[i] for k, v in batch.items()} for i in range(micro)]
        counts = sum(target_counts(b["token_ids"], self.depth, b["loss_mask"], b["segment_ids"])
                     for b in micro_batches)
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        grads, totals, loads, dropped = None, None, None, 0
        for b in micro_batches:
            (_, (parts, layer_loads, layer_dropped)), g = grad_fn(trainable, non_trainable, b, counts, 1.0 / micro)
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
            totals = parts if totals is None else {k: totals[k] + parts[k] for k in totals}
            loads = layer_loads if loads is None else loads + layer_loads
            dropped = dropped + layer_dropped
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in grads))
        scale = self.cfg.clip_norm / jnp.maximum(norm, self.cfg.clip_norm)   # tf.clip_by_global_norm's rule
        grads = [g * scale.astype(g.dtype) for g in grads]
        return grads, {**totals, "grad_norm": norm, "expert_loads": loads, "dropped_assignments": dropped}

    def _step_impl(self, state, batch):
        grads, metrics = self._gradients(state, batch)
        trainable, non_trainable, optimizer_values = state
        trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, grads, trainable)
        if self.cfg.bias_update_gamma:
            non_trainable = list(non_trainable)
            for layer, slot in enumerate(self.bias_slots):
                non_trainable[slot] = non_trainable[slot] + bias_update(metrics["expert_loads"][layer],
                                                                        self.cfg.bias_update_gamma)
        return (trainable, non_trainable, optimizer_values), metrics

    def gradients(self, state, batch: dict):
        """The clipped gradients and metrics of `batch` without updating anything (tests)."""
        with self._scope():
            return jax.jit(self._gradients)(state, self.place_batch(batch))
