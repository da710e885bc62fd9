"""The GRPO objective (DeepSeekMath §4.1, eq. 3; DeepSeek-R1 §2.2.1), written with
keras.ops so it runs in the TensorFlow training loop and on JAX.

Per completion token t of completion i in a group of G for one prompt:
    rho      = pi_theta(o_t) / pi_old(o_t)                       (old = the sampling policy)
    A_i      = (r_i - mean(r)) / (std(r) + eps)                  (every token of o_i)
    KL_t     = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1        (k3, >= 0; ref = frozen)
    loss_t   = -( min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) - beta KL_t )
Aggregations (the names the literature and TRL use; they differ only in the normaliser):
    grpo     mean over completions of (sum_t loss_t / |o_i|)          DeepSeekMath
    bnpo     sum over all tokens / number of completion tokens          (token-level, DAPO)
    dr_grpo  sum over all tokens / (completions x max completion len)   Dr. GRPO
"""

import numpy as np
from keras import ops

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


def group_advantages(rewards, group_size: int, scale_rewards: bool = True, eps: float = 1e-4) -> np.ndarray:
    """rewards [prompts x G] flat, grouped by prompt -> advantages, same shape.

    std is the sample standard deviation (n - 1), as TRL's torch.std; with scale_rewards
    False only the group mean is subtracted (Dr. GRPO). A group whose rewards are all equal
    gets advantage 0: it carries no signal."""
    rewards = np.asarray(rewards, np.float64)
    if rewards.size % group_size:
        raise ValueError(f"{rewards.size} rewards do not split into groups of {group_size}")
    groups = rewards.reshape(-1, group_size)
    centred = groups - groups.mean(axis=1, keepdims=True)
    if scale_rewards and group_size > 1:
        centred = centred / (groups.std(axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1).astype(np.float32)


def token_log_probs(logits, token_ids):
    """log pi(token_{t+1} | tokens <= t): logits [b, s, V], token_ids [b, s] -> [b, s - 1]."""
    log_probs = ops.log_softmax(ops.cast(logits[:, :-1], "float32"), axis=-1)
    targets = ops.cast(token_ids[:, 1:], "int32")[..., None]
    return ops.squeeze(ops.take_along_axis(log_probs, targets, axis=-1), -1)


def token_entropy(logits):
    """Entropy of the next-token distribution at every position: [b, s, V] -> [b, s]."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.exp(log_probs) * log_probs, axis=-1)


def k3_kl(log_probs, ref_log_probs):
    """Schulman's k3 estimator of KL(pi_theta || pi_ref) per token: unbiased, always >= 0."""
    delta = ref_log_probs - log_probs
    return ops.exp(delta) - delta - 1.0


def grpo_loss(log_probs, old_log_probs, ref_log_probs, advantages, completion_mask, epsilon_low: float = 0.2,
              epsilon_high: float = 0.2, beta: float = 0.04, loss_type: str = "grpo",
              max_completion_length: int | None = None) -> dict:
    """All per-token tensors are [b, t] over the same target positions; completion_mask is
    1 on the completion's tokens; advantages [b]; ref_log_probs may be None when beta = 0.
    Returns {"loss", "kl", "clip_fraction"} (kl and clip fraction are token means)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    mask = ops.cast(completion_mask, "float32")
    advantages = ops.cast(advantages, "float32")[:, None]
    ratio = ops.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = ops.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high) * advantages
    per_token = -ops.minimum(unclipped, clipped)
    kl = ops.zeros_like(per_token)
    if beta:
        kl = k3_kl(log_probs, ref_log_probs)
        per_token = per_token + beta * kl
    tokens = ops.maximum(ops.sum(mask), 1.0)
    if loss_type == "grpo":
        per_sequence = ops.sum(per_token * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
        loss = ops.mean(per_sequence)
    elif loss_type == "bnpo":
        loss = ops.sum(per_token * mask) / tokens
    else:
        if not max_completion_length:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
        loss = ops.sum(per_token * mask) / (ops.cast(ops.shape(mask)[0], "float32") * max_completion_length)
    # a token is clipped where the clipped term is the one min() kept and differs
    is_clipped = ops.cast((ratio < 1.0 - epsilon_low) & (advantages < 0), "float32") + \
        ops.cast((ratio > 1.0 + epsilon_high) & (advantages > 0), "float32")
    return {"loss": loss, "kl": ops.sum(kl * mask) / tokens,
            "clip_fraction": ops.sum(is_clipped * mask) / tokens}
