"""The GRPO loop (DeepSeekMath §4.1.2 "Iterative..." without the reward-model refresh).

Per step:
1. draw prompts_per_step prompts (by seed and step, so a resumed run draws the same);
2. sample G completions of each from the OLD policy (the current weights, before this
   step's updates) with the batched KV-cached generator;
3. score them with the configured reward functions; advantages within each group;
4. log-probs under the old policy (only needed when num_iterations > 1: with a single
   update the old log-probs are the current ones, held constant) and under the frozen
   reference model;
5. num_iterations AdamW updates on the clipped objective with beta * k3 KL.
Router biases are not updated here: RL batches are tiny and skewed, and balancing is a
pretraining concern.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf

from stages import termination
from stages.posttrain import rollout
from stages.posttrain.grpo_loss import grpo_loss, group_advantages, token_entropy, token_log_probs
from stages.posttrain.rewards import combined_reward
from stages.trainer.adamw import make_optimizer
from stages.trainer.metrics_log import truncate_metrics
from stages.trainer.optimizer import resumable
from stages.trainer.progress import Progress

METRICS_FILE = "metrics.jsonl"


class GRPOTrainer:
    def __init__(self, policy, reference, template, cfg, output_dir: str, log_metrics=None):
        self.policy, self.reference, self.template, self.cfg = policy, reference, template, cfg
        self.output_dir, self.log_metrics = output_dir, log_metrics
        os.makedirs(output_dir, exist_ok=True)
        self.reference.trainable = False
        self.optimizer = make_optimizer(cfg, policy)
        self._update = tf.function(self._update_impl, jit_compile=cfg.jit_compile, reduce_retracing=True)
        self._log_probs = tf.function(self._log_probs_impl, jit_compile=cfg.jit_compile, reduce_retracing=True)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy()) // self.cfg.num_iterations

    # ------------------------------------------------------------------ compiled parts
    def _log_probs_impl(self, model, token_ids):
        return token_log_probs(model(token_ids), token_ids)

    def _update_impl(self, token_ids, completion_mask, advantages, old_log_probs, ref_log_probs, use_old):
        cfg = self.cfg
        with tf.GradientTape() as tape:
            logits = self.policy(token_ids)
            log_probs = token_log_probs(logits, token_ids)
            # one update per rollout: pi_old is the current policy, held constant
            old = tf.where(use_old, old_log_probs, tf.stop_gradient(log_probs))
            parts = grpo_loss(log_probs, old, ref_log_probs, advantages, completion_mask, cfg.epsilon_low,
                              cfg.epsilon_high, cfg.beta, cfg.loss_type, cfg.max_completion_length)
        grads = tape.gradient(parts["loss"], self.policy.trainable_variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, self.policy.trainable_variables)]
        grads, grad_norm = tf.clip_by_global_norm(grads, cfg.clip_norm)
        self.optimizer.apply(grads, self.policy.trainable_variables)
        mask = tf.cast(completion_mask, tf.float32)
        entropy = tf.reduce_sum(token_entropy(logits[:, :-1]) * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
        return {**parts, "grad_norm": grad_norm, "entropy": entropy}

    # ------------------------------------------------------------------ one step
    def rollout(self, problems: list[dict], step: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        chosen = [problems[i] for i in rng.choice(len(problems), cfg.prompts_per_step, replace=False)]
        prompts = [self.template.encode_prompt(p["prompt"]) for p in chosen]
        result = rollout.sample(self.policy, prompts, cfg.num_generations, cfg.max_completion_length,
                                cfg.max_prompt_length, self.template.pad_id, cfg.temperature, cfg.top_p,
                                seed=cfg.seed * 1_000_003 + step)
        rewards, parts = [], {}
        for index, ids in zip(result.prompt_index, result.completion_ids):
            total, values = combined_reward(self.template.decode_reply(ids), chosen[index], cfg.reward_functions)
            rewards.append(total)
            for name, value in values.items():
                parts.setdefault(name, []).append(value)
        return result, np.array(rewards, np.float32), {k: np.array(v) for k, v in parts.items()}

    def train_step(self, problems: list[dict], step: int) -> dict:
        cfg = self.cfg
        result, rewards, parts = self.rollout(problems, step)
        advantages = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
        tokens = tf.constant(result.token_ids)
        ref = self._log_probs(self.reference, tokens) if cfg.beta else tf.zeros(result.completion_mask.shape)
        use_old = cfg.num_iterations > 1
        old = self._log_probs(self.policy, tokens) if use_old else tf.zeros(result.completion_mask.shape)
        for _ in range(cfg.num_iterations):
            out = self._update(tokens, tf.constant(result.completion_mask), tf.constant(advantages), old, ref,
                               tf.constant(use_old))
        groups = rewards.reshape(-1, cfg.num_generations)
        metrics = {"reward": float(rewards.mean()), "reward_std": float(groups.std(axis=1, ddof=1).mean()),
                   "zero_std_fraction": float((groups.std(axis=1) == 0).mean()),
                   "completion_length": float(result.completion_lengths.mean()),
                   **{f"reward/{k}": float(v.mean()) for k, v in parts.items()},
                   **{k: float(v) for k, v in out.items()},
                   "learning_rate": float(self.optimizer.learning_rate)}
        return metrics

    # ------------------------------------------------------------------ the run
    def fit(self, problems: list[dict], init_weights: str | None = None, discard_unreadable: bool = False) -> dict:
        cfg = self.cfg
        checkpoint, manager = resumable(self.policy, self.optimizer, os.path.join(self.output_dir, "checkpoints"),
                                        cfg.keep_checkpoints, init_weights, discard_unreadable)
        truncate_metrics(os.path.join(self.output_dir, METRICS_FILE), self.step)
        last, progress = {}, Progress(cfg.steps, self.step)
        while self.step < cfg.steps:
            termination.check()
            start = time.perf_counter()
            metrics = self.train_step(problems, self.step)
            metrics["seconds_per_step"] = time.perf_counter() - start
            step = self.step
            if step % cfg.log_every == 0 or step == cfg.steps:
                last = self._log(progress.prefix(step), step, metrics)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                manager.save(checkpoint_number=step)
        return last

    def _log(self, progress: str, step: int, metrics: dict) -> dict:
        print(f"grpo {progress}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()), flush=True)
        with open(os.path.join(self.output_dir, METRICS_FILE), "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.log_metrics:
            self.log_metrics(metrics, step)
        return metrics
