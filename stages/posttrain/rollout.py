"""Rollouts: G completions per prompt from a policy, with the KV-cached batched
generator, laid out for scoring (prompt + completion per row, right-padded to a fixed
length so the training step compiles once)."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Rollout:
    token_ids: np.ndarray          # [n, length] prompt + completion + padding
    completion_mask: np.ndarray    # [n, length - 1] 1 where target t + 1 is a completion token
    completion_ids: list[list[int]]
    prompt_index: np.ndarray       # [n] which prompt each row answers (rows grouped by prompt)

    @property
    def completion_lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.completion_ids])


def layout(prompt_ids: list[list[int]], completion_ids: list[list[int]], length: int, pad_id: int):
    """Rows of prompt + completion, right-padded to `length`, and the completion mask over
    next-token targets."""
    tokens = np.full((len(prompt_ids), length), pad_id, np.int32)
    mask = np.zeros((len(prompt_ids), length - 1), np.float32)
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        sequence = [*prompt, *completion][:length]
        tokens[row, :len(sequence)] = sequence
        # target t + 1 is a completion token for t in [len(prompt) - 1, len(sequence) - 1)
        mask[row, len(prompt) - 1:len(sequence) - 1] = 1.0
    return tokens, mask


def sample(model, prompt_ids: list[list[int]], group_size: int, max_new_tokens: int, max_prompt_length: int,
           pad_id: int, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> Rollout:
    """group_size completions of every prompt, all in one batched generation."""
    too_long = [i for i, p in enumerate(prompt_ids) if len(p) > max_prompt_length]
    if too_long:
        raise ValueError(f"prompt {too_long[0]} has {len(prompt_ids[too_long[0]])} tokens, over "
                         f"max_prompt_length {max_prompt_length}")
    repeated = [p for p in prompt_ids for _ in range(group_size)]
    completions = model.generate(repeated, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    tokens, mask = layout(repeated, completions, max_prompt_length + max_new_tokens, pad_id)
    return Rollout(tokens, mask, completions, np.repeat(np.arange(len(prompt_ids)), group_size))
