"""Batched autoregressive generation over the absorbed-MLA cache.

Prompts of different lengths are left-padded; padding slots are masked out of attention
and RoPE positions count real tokens only, so each row decodes as if it were alone.
Greedy when temperature == 0, else temperature + top-p (nucleus) sampling, reproducible
by seed. A row stops at its EOS; generation ends when every row has stopped.
"""

from collections.abc import Sequence

import numpy as np
from keras import ops


def _choose(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> np.ndarray:
    """logits [b, vocab] -> next token ids [b]."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1)
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = np.cumsum(sorted_probs, axis=-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=-1)
        probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs])


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, eos_token_id: int | None = None, seed: int = 0,
             cache_dtype: str = "float32") -> list[list[int]]:
    """Returns, per prompt, the generated token ids (ending with EOS if it was produced).

    eos_token_id defaults to the model config's; pass -1 to never stop early.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    vocab = model.cfg.vocab_size
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise ValueError(f"prompt token ids must lie in [0, {vocab})")
    eos = model.cfg.eos_token_id if eos_token_id is None else eos_token_id
    rng = np.random.default_rng(seed)

    batch, prompt_len = len(prompts), max(len(p) for p in prompts)
    lengths = np.array([len(p) for p in prompts])
    tokens = np.zeros((batch, prompt_len), np.int32)
    valid = np.zeros((batch, prompt_len + max_new_tokens), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, prompt_len - len(prompt):] = prompt
        valid[row, prompt_len - len(prompt):] = True
    valid[:, prompt_len:] = True
    positions = np.maximum(np.cumsum(valid[:, :prompt_len], axis=1) - 1, 0)

    cache = model.init_cache(batch, prompt_len + max_new_tokens, cache_dtype)
    logits, cache = model.decode(tokens, positions, cache, 0, valid)
    generated = [[] for _ in prompts]
    finished = np.zeros(batch, bool)
    for step in range(max_new_tokens):
        next_tokens = _choose(ops.convert_to_numpy(logits[:, -1]), temperature, top_p, rng)
        for row in np.flatnonzero(~finished):
            generated[row].append(int(next_tokens[row]))
        finished |= next_tokens == eos
        if finished.all() or step == max_new_tokens - 1:
            break
        logits, cache = model.decode(next_tokens[:, None].astype(np.int32), (lengths + step)[:, None],
                                     cache, prompt_len + step, valid)
    return generated
