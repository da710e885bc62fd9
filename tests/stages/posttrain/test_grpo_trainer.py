"""The GRPO loop's mechanics on a model small enough for milliseconds per step: rollouts
laid out for scoring, metrics, several updates per rollout, and resuming by step."""

import json

import numpy as np
import pytest

from model.config import ModelConfig
from model.transformer import DeepSeekV3CausalLM
from stages.grpo import GRPOConfig
from stages.posttrain import rollout
from stages.posttrain.grpo_trainer import GRPOTrainer
from stages.posttrain.tasks import generate_problems
from tests.stages.posttrain.conftest import SMALL_MODEL

PROBLEMS, _ = generate_problems(0, 20, ["arithmetic"], 0, 9)


def test_layout_marks_completion_targets_only():
    tokens, mask = rollout.layout([[7, 8, 9], [7]], [[4, 5, 1], [6]], length=6, pad_id=2)
    np.testing.assert_array_equal(tokens, [[7, 8, 9, 4, 5, 1], [7, 6, 2, 2, 2, 2]])
    # target t + 1 is a completion token: positions 2..4 of row 0 (predicting 4, 5, 1), 0 of row 1
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])


def _trainer(template, tmp_path, **changes):
    cfg = GRPOConfig(**{**dict(steps=2, prompts_per_step=2, num_generations=3, max_prompt_length=32,
                               max_completion_length=6, learning_rate=1e-3, final_learning_rate=1e-3,
                               log_every=1, checkpoint_every=1), **changes})
    policy = DeepSeekV3CausalLM(ModelConfig(**SMALL_MODEL))
    reference = DeepSeekV3CausalLM(ModelConfig(**SMALL_MODEL))
    reference.set_weights(policy.get_weights())
    return GRPOTrainer(policy, reference, template, cfg, str(tmp_path))


@pytest.mark.slow
def test_steps_log_the_grpo_metrics_and_resume_by_step(template, tmp_path):
    trainer = _trainer(template, tmp_path, num_iterations=2)
    last = trainer.fit(PROBLEMS)
    assert int(trainer.optimizer.iterations.numpy()) == 4            # 2 steps x 2 updates per rollout
    for key in ("reward", "reward/accuracy", "reward/format", "reward_std", "zero_std_fraction", "kl",
                "clip_fraction", "completion_length", "entropy", "grad_norm"):
        assert np.isfinite(last[key]), key
    assert 0 <= last["zero_std_fraction"] <= 1 and 0 <= last["clip_fraction"] <= 1
    # a new trainer over the same directory continues at step 2 and runs step 3 only
    again = _trainer(template, tmp_path, num_iterations=2, steps=3)
    again.fit(PROBLEMS)
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3]


def test_rollouts_are_reproducible_by_step(template, tmp_path):
    trainer = _trainer(template, tmp_path)
    first, rewards, _ = trainer.rollout(PROBLEMS, step=5)
    again, rewards_again, _ = trainer.rollout(PROBLEMS, step=5)
    other, _, _ = trainer.rollout(PROBLEMS, step=6)
    np.testing.assert_array_equal(first.token_ids, again.token_ids)
    np.testing.assert_array_equal(rewards, rewards_again)
    assert not np.array_equal(first.token_ids, other.token_ids)
    assert first.token_ids.shape == (2 * 3, 32 + 6)


@pytest.mark.parametrize("field,value,message", [
    ("loss_type", "ppo", "loss_type"), ("num_generations", 1, "num_generations"),
    ("reward_functions", {"speed": 1.0}, "reward_functions.speed")])
def test_config_errors_name_the_key(field, value, message):
    from stages.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        GRPOConfig(**{field: value}).validate("grpo")
