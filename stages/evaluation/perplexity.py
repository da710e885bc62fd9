"""Held-out perplexity at a given context length, with the sliding window of the YaRN
paper (§4.1, after Press et al.): windows of `context_length` tokens advance by `stride`;
each window scores only the tokens that no earlier window scored, so every token is
predicted once, with up to context_length - 1 tokens of context."""

import math

import numpy as np
from keras import ops


def window_targets(num_tokens: int, context_length: int, stride: int, max_windows: int | None = None):
    """(begin, end, first_scored) per window: the window is tokens[begin:end] (at most
    context_length tokens) and its predictions of tokens[first_scored:end] count. The first
    window scores all it can; each later one moves `stride` tokens on (at most
    context_length - 1, so the first scored token keeps its predecessor in the window)."""
    stride = max(1, min(stride, context_length - 1))
    end = min(context_length, num_tokens)
    windows = [(0, end, 1)]
    while end < num_tokens and not (max_windows and len(windows) >= max_windows):
        first, end = end, min(end + stride, num_tokens)
        windows.append((max(0, end - context_length), end, first))
    return windows


def sliding_window_perplexity(model, tokens, context_length: int, stride: int, max_windows: int | None = None) -> dict:
    """Perplexity of `model` on the 1-D token stream `tokens`."""
    tokens = np.asarray(tokens, np.int32)
    if len(tokens) < 2:
        raise ValueError("need at least 2 tokens to measure perplexity")
    nll, count = 0.0, 0
    for begin, end, first in window_targets(len(tokens), context_length, stride, max_windows):
        logits = ops.convert_to_numpy(model(tokens[None, begin:end]))[0]       # [L, V]
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        positions = np.arange(first - 1, end - 1) - begin                     # predicting tokens first..end-1
        nll -= log_probs[positions, tokens[first:end]].astype(np.float64).sum()
        count += end - first
    return {"perplexity": math.exp(nll / count), "tokens": count}
