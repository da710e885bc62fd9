"""The pretraining objective: next-token cross-entropy + lambda * MTP loss + alpha *
sequence-wise balance loss (V3 paper eqs. 17-25)."""

from keras import ops

from model.balancing import DEFAULT_ALPHA


def shifted_cross_entropy(logits, token_ids, shift: int, loss_mask=None, segment_ids=None):
    """Mean CE of logits at position i against token i + shift, over valid targets:
    loss_mask [b, s] (1 = learn this target token) and, for packed sequences, only
    targets in the same segment as the predicting position."""
    predictions, targets = logits[:, :-shift], token_ids[:, shift:]
    valid = ops.ones_like(targets, dtype="float32")
    if loss_mask is not None:
        valid = valid * ops.cast(loss_mask[:, shift:], "float32")
    if segment_ids is not None:
        valid = valid * ops.cast(segment_ids[:, :-shift] == segment_ids[:, shift:], "float32")
    log_probs = ops.log_softmax(ops.cast(predictions, "float32"), axis=-1)
    nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.cast(targets, "int32")[..., None], axis=-1), -1)
    return ops.sum(nll * valid) / ops.maximum(ops.sum(valid), 1.0)


def causal_lm_loss(outputs, token_ids, mtp_lambda: float = 0.3, balance_alpha: float = DEFAULT_ALPHA,
                   loss_mask=None, segment_ids=None):
    """outputs: the dict of model(..., return_aux=True). MTP depth k predicts token
    i + 1 + k; L_MTP = lambda / D * sum_k L_k (eq. 25).

    Returns {"loss", "lm_loss", "mtp_loss", "balance_loss"}.
    """
    lm_loss = shifted_cross_entropy(outputs["logits"], token_ids, 1, loss_mask, segment_ids)
    mtp_logits = outputs["mtp_logits"]
    mtp_loss = ops.zeros(())
    if mtp_logits:
        mtp_loss = sum(shifted_cross_entropy(logits, token_ids, 1 + depth, loss_mask, segment_ids)
                       for depth, logits in enumerate(mtp_logits, start=1)) / len(mtp_logits)
    balance_loss = outputs["balance"]
    loss = lm_loss + mtp_lambda * mtp_loss + balance_alpha * balance_loss
    return {"loss": loss, "lm_loss": lm_loss, "mtp_loss": mtp_loss, "balance_loss": balance_loss}
