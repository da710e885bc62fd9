"""The pretraining objective: next-token cross-entropy + lambda * MTP loss + alpha *
sequence-wise balance loss (V3 paper eqs. 17-25).

Cross-entropy terms are token means. Under gradient accumulation or data parallelism a
mean of per-batch means is not the global mean, so callers that split a batch pass the
whole batch's target counts (`target_counts`) and get exactly the global mean's gradient
when they sum the parts.
"""

from keras import ops

from model.balancing import DEFAULT_ALPHA


def _valid_targets(token_ids, shift: int, loss_mask=None, segment_ids=None):
    """1.0 where the prediction at position i of token i + shift counts: the target is in
    loss_mask and, for packed sequences, in the same segment as position i."""
    valid = ops.ones_like(token_ids[:, shift:], dtype="float32")
    if loss_mask is not None:
        valid = valid * ops.cast(loss_mask[:, shift:], "float32")
    if segment_ids is not None:
        valid = valid * ops.cast(segment_ids[:, :-shift] == segment_ids[:, shift:], "float32")
    return valid


def target_counts(token_ids, mtp_depth: int, loss_mask=None, segment_ids=None):
    """Number of valid targets for the main head and each MTP depth: [1 + mtp_depth] float32."""
    return ops.stack([ops.sum(_valid_targets(token_ids, 1 + depth, loss_mask, segment_ids))
                      for depth in range(mtp_depth + 1)])


def shifted_cross_entropy(logits, token_ids, shift: int, loss_mask=None, segment_ids=None, count=None):
    """CE of logits at position i against token i + shift, summed over valid targets and
    divided by `count` (default: this batch's number of valid targets)."""
    valid = _valid_targets(token_ids, shift, loss_mask, segment_ids)
    log_probs = ops.log_softmax(ops.cast(logits[:, :-shift], "float32"), axis=-1)
    targets = ops.cast(token_ids[:, shift:], "int32")[..., None]
    nll = -ops.squeeze(ops.take_along_axis(log_probs, targets, axis=-1), -1)
    if count is None:
        count = ops.sum(valid)
    return ops.sum(nll * valid) / ops.maximum(count, 1.0)


def causal_lm_loss(outputs, token_ids, mtp_lambda: float = 0.3, balance_alpha: float = DEFAULT_ALPHA,
                   loss_mask=None, segment_ids=None, target_counts=None, balance_weight: float = 1.0):
    """outputs: the dict of model(..., return_aux=True). MTP depth k predicts token
    i + 1 + k; L_MTP = lambda / D * sum_k L_k (eq. 25).

    target_counts: [1 + D] counts to divide by instead of this batch's own (see module doc).
    balance_weight: this batch's share of the whole batch's sequences.
    Returns {"loss", "lm_loss", "mtp_loss", "balance_loss"}.
    """
    counts = [None] * (1 + len(outputs["mtp_logits"])) if target_counts is None else \
        [target_counts[i] for i in range(1 + len(outputs["mtp_logits"]))]
    lm_loss = shifted_cross_entropy(outputs["logits"], token_ids, 1, loss_mask, segment_ids, counts[0])
    mtp_logits = outputs["mtp_logits"]
    mtp_loss = ops.zeros(())
    if mtp_logits:
        mtp_loss = sum(shifted_cross_entropy(logits, token_ids, 1 + depth, loss_mask, segment_ids, counts[depth])
                       for depth, logits in enumerate(mtp_logits, start=1)) / len(mtp_logits)
    balance_loss = outputs["balance"] * balance_weight
    loss = lm_loss + mtp_lambda * mtp_loss + balance_alpha * balance_loss
    return {"loss": loss, "lm_loss": lm_loss, "mtp_loss": mtp_loss, "balance_loss": balance_loss}


DIVERGENCES = ("forward_kl", "reverse_kl")


def distillation_loss(student_logits, teacher_logits, token_ids, divergence: str = "forward_kl",
                      temperature: float = 1.0, loss_mask=None, segment_ids=None, count=None):
    """Logit-level distillation on the next-token distributions of the valid targets
    (the positions causal_lm_loss's main head scores), summed and divided by `count`
    (default: this batch's number of valid targets).

    forward_kl = KL(teacher || student) = sum_v p_t (log p_t - log p_s): mass-covering,
    what Hinton et al.'s distillation and GKD's beta = 0 minimise; reverse_kl =
    KL(student || teacher): mode-seeking, GKD's beta = 1 (some tools swap the names, so
    ours say which distribution comes first). Both distributions are softened by the
    temperature and the result scaled by T^2 so gradients keep their size (Hinton et al.)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    valid = _valid_targets(token_ids, 1, loss_mask, segment_ids)
    student = ops.log_softmax(ops.cast(student_logits[:, :-1], "float32") / temperature, axis=-1)
    teacher = ops.log_softmax(ops.cast(ops.stop_gradient(teacher_logits[:, :-1]), "float32") / temperature, axis=-1)
    if divergence == "forward_kl":
        per_position = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1)
    else:
        per_position = ops.sum(ops.exp(student) * (student - teacher), axis=-1)
    if count is None:
        count = ops.sum(valid)
    return temperature ** 2 * ops.sum(per_position * valid) / ops.maximum(count, 1.0)
