"""A policy on held-out problems: completions from the chat prompt, scored by the
rule-based rewards. Used by every post-training stage for its before/after numbers."""

import numpy as np

from stages.posttrain.rewards import combined_reward


def evaluate_policy(model, template, problems: list[dict], reward_weights: dict[str, float],
                    max_new_tokens: int, samples: int = 1, temperature: float = 0.0, seed: int = 0,
                    batch_size: int = 64) -> dict:
    """Mean total reward, each reward's mean, accuracy, format compliance and completion
    length over `samples` completions of each problem (greedy when temperature is 0)."""
    if not problems:
        raise ValueError("no held-out problems to evaluate on")
    prompts = [template.encode_prompt(p["prompt"]) for p in problems for _ in range(samples)]
    owners = [p for p in problems for _ in range(samples)]
    totals, parts, lengths = [], {}, []
    for start in range(0, len(prompts), batch_size):
        outs = model.generate(prompts[start:start + batch_size], max_new_tokens, temperature=temperature,
                              seed=seed + start)
        for problem, ids in zip(owners[start:start + batch_size], outs):
            total, values = combined_reward(template.decode_reply(ids), problem, reward_weights)
            totals.append(total)
            lengths.append(len(ids))
            for name, value in values.items():
                parts.setdefault(name, []).append(value)
    result = {"reward": float(np.mean(totals)), "completion_length": float(np.mean(lengths)),
              "completions": len(totals)}
    result.update({f"reward/{name}": float(np.mean(v)) for name, v in parts.items()})
    return result


def examples(model, template, problems: list[dict], max_new_tokens: int, count: int = 3) -> list[dict]:
    """A few greedy prompt/completion pairs, for the stage's report."""
    outs = model.generate([template.encode_prompt(p["prompt"]) for p in problems[:count]], max_new_tokens)
    return [{"prompt": p["prompt"], "answer": p["answer"], "completion": template.decode_reply(ids)}
            for p, ids in zip(problems, outs)]


def mean_over_targets(rows, batch_loss, batch_size: int = 8) -> float:
    """The token mean of a per-target loss over packed rows. batch_loss(batch, count) must
    divide its batch's sum by `count`, the number of targets in ALL rows
    (model.losses.target_counts), so the batches' results add up to the exact mean, as
    the trainer's micro-batches do."""
    from keras import ops

    from model.losses import target_counts

    features = rows.features()
    count = target_counts(features["token_ids"], 0, features["loss_mask"], features["segment_ids"])[0]
    total = 0.0
    for start in range(0, len(rows.token_ids), batch_size):
        batch = {k: v[start:start + batch_size] for k, v in features.items()}
        total += float(ops.convert_to_numpy(batch_loss(batch, count)))
    return total
