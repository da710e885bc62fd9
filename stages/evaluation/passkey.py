"""Passkey retrieval (Mohtashami & Jaggi 2023, as used by the YaRN paper): a random
number hidden at a random depth in filler text; the model must repeat it. Accuracy per
context length; the passkey context is the largest length with >= 80% accuracy."""

import numpy as np

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.\n")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "What is the pass key? The pass key is"


def passkey_prompt(tokenizer, context_length: int, rng: np.random.Generator, digits: int = 5):
    """(prompt token ids of about context_length tokens, the key as text)."""
    key = str(rng.integers(10 ** (digits - 1), 10 ** digits))
    fixed = len(tokenizer.encode(INTRO + NEEDLE.format(key=key) + QUESTION).ids)
    per_filler = len(tokenizer.encode(FILLER).ids)
    repeats = max(1, (context_length - fixed - digits - 2) // per_filler)
    depth = int(rng.integers(0, repeats + 1))
    text = INTRO + FILLER * depth + NEEDLE.format(key=key) + FILLER * (repeats - depth) + QUESTION
    return tokenizer.encode(text).ids, key


def passkey_accuracy(generate, tokenizer, context_length: int, trials: int, seed: int = 0) -> dict:
    """generate(prompt_ids, max_new_tokens) -> generated ids. A trial passes when the
    decoded answer starts with the key."""
    rng = np.random.default_rng(seed)
    correct = 0
    for _ in range(trials):
        prompt, key = passkey_prompt(tokenizer, context_length, rng)
        answer = tokenizer.decode(generate(prompt, len(tokenizer.encode(" " + key).ids) + 2))
        correct += answer.strip().startswith(key)
    return {"accuracy": correct / trials, "trials": trials, "prompt_tokens": len(prompt)}
