"""Attention masks: boolean (True where a query may attend to a key), and the additive
float32 bias the attention layers take (0 where allowed, a large negative elsewhere; a
float input also lets a rematerialised block differentiate through its arguments)."""

from keras import ops


def causal_mask(seq_len: int, segment_ids=None):
    """[1 or batch, seq, seq]: causal, and block-diagonal per document when packed
    documents carry segment ids [batch, seq] (a token sees only its own document)."""
    positions = ops.arange(seq_len)
    mask = (positions[None, :] <= positions[:, None])[None]
    if segment_ids is not None:
        mask = ops.logical_and(mask, segment_ids[:, :, None] == segment_ids[:, None, :])
    return mask


def cache_mask(query_slots, key_valid):
    """[batch, queries, cache_len] for decoding: a query in cache slot q sees the valid
    slots t <= q (key_valid [batch, cache_len] is False for left padding)."""
    slots = ops.arange(ops.shape(key_valid)[1])
    return ops.logical_and(slots[None, None, :] <= query_slots[:, :, None], key_valid[:, None, :])


MASKED = -1e30


def mask_bias(mask):
    """Boolean mask -> additive float32 bias of the same shape."""
    return ops.where(mask, 0.0, MASKED)
