"""Held-out perplexity at a given context length, with the sliding window of the YaRN
paper (§4.1, after Press et al.): the same tokens are scored at every context length,
`stride` at a time, each chunk predicted by a window of `context_length` tokens that ends
with it. So perplexities at different lengths compare the same predictions made with
more or less context (every scored token sees at least context_length - stride tokens).
"""

import math

import numpy as np
from keras import ops


def window_targets(num_tokens: int, context_length: int, stride: int, score_from: int,
                   max_windows: int | None = None):
    """(begin, end, first_scored) per window: the window is tokens[begin:end] and its
    predictions of tokens[first_scored:end] (the last `stride` tokens) count. Scored
    tokens run from score_from on, whatever the context length."""
    if not 0 < stride < context_length:
        raise ValueError(f"stride must be in [1, context_length), got {stride} for {context_length}")
    score_from = max(score_from, 1)  # token 0 has nothing to be predicted from
    windows = []
    for first in range(score_from, num_tokens, stride):
        end = min(first + stride, num_tokens)
        windows.append((max(0, end - context_length), end, first))
        if max_windows and len(windows) == max_windows:
            break
    return windows


def sliding_window_perplexity(model, tokens, context_length: int, stride: int, score_from: int = 1,
                              max_windows: int | None = None) -> dict:
    """Perplexity of `model` on tokens[score_from:] (or its first max_windows * stride
    tokens) of the 1-D stream `tokens`."""
    tokens = np.asarray(tokens, np.int32)
    windows = window_targets(len(tokens), context_length, stride, score_from, max_windows)
    if not windows:
        raise ValueError(f"no tokens to score: {len(tokens)} tokens, scoring from {score_from}")
    nll, count = 0.0, 0
    for begin, end, first in windows:
        logits = ops.convert_to_numpy(model(tokens[None, begin:end]))[0]      # [L, V]
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        positions = np.arange(first - 1, end - 1) - begin                     # predicting tokens first..end-1
        nll -= log_probs[positions, tokens[first:end]].astype(np.float64).sum()
        count += end - first
    return {"perplexity": math.exp(nll / count), "tokens": count}
