"""Post-training does what it is for, measured on held-out problems with a model small
enough for 2 CPU cores: SFT teaches the reply format, GRPO from that model raises the
mean held-out reward, and a logit-distilled student is closer to its teacher than the
same student trained without one, and learns the teacher's skill from its answers alone.

Numbers seen when these were written are in the comments; the margins asserted are
about half of them."""

import dataclasses
import random

import pytest

from model.config import ModelConfig
from model.transformer import DeepSeekV3CausalLM
from stages.posttrain.packing import pack
from stages.posttrain.policy_eval import evaluate_policy
from stages.posttrain.tasks import generate_problems, problem_id, split_problems, worked_solution
from stages.trainer.config import TrainingConfig
from stages.trainer.input import array_dataset
from stages.trainer.loop import Trainer
from tests.stages.test_training_stages import MODEL as PIPELINE_MODEL

REWARDS = {"accuracy": 1.0, "format": 1.0}
# the end-to-end pipeline test's model, with the test tokenizer's vocabulary
MODEL = {**PIPELINE_MODEL, "vocab_size": 512}


def conversations(template, problems):
    return [template.encode_conversation([{"role": "user", "content": p["prompt"]},
                                          {"role": "assistant", "content": worked_solution(p)}]) for p in problems]


def train(model_config, rows, steps, work_dir, learning_rate=3e-3, teacher=None):
    cfg = TrainingConfig(steps=steps, seq_len=rows.token_ids.shape[1], global_batch_size=16,
                         learning_rate=learning_rate, warmup_steps=10, decay_steps=steps - 10,
                         final_learning_rate=learning_rate / 10, jit_compile=True, log_every=steps,
                         checkpoint_every=10 * steps, mtp_lambda=0.0)
    trainer = Trainer(model_config, cfg, str(work_dir), teacher=teacher)
    features = rows.features()
    trainer.fit_on(lambda batch, context, skip: array_dataset(features, batch, 0, context, skip))
    return trainer.model


@pytest.fixture(scope="module")
def problems():
    generated, _ = generate_problems(0, 1500, ["arithmetic"], 0, 20)
    train_problems, held_out = split_problems(generated, 0.1)
    half = len(train_problems) // 2
    return {"sft": train_problems[:half], "grpo": train_problems[half:], "held_out": held_out[:64]}


@pytest.fixture(scope="module")
def sft_model(template, problems, tmp_path_factory):
    """Briefly fine-tuned from random weights: the format half learned."""
    rows = pack(conversations(template, problems["sft"]), 128, template.pad_id)
    return train(ModelConfig.from_preset("tiny").replace(**MODEL), rows, 80, tmp_path_factory.mktemp("sft"))


def sampled_reward(model, template, problems, seed=1):
    return evaluate_policy(model, template, problems, REWARDS, 32, samples=4, temperature=1.0, seed=seed)


def copy_of(model):
    clone = DeepSeekV3CausalLM(model.cfg)
    clone.set_weights(model.get_weights())
    return clone


@pytest.fixture(scope="module")
def grpo_run(sft_model, template, problems, tmp_path_factory):
    from stages.grpo import GRPOConfig
    from stages.posttrain.grpo_trainer import GRPOTrainer

    policy = copy_of(sft_model)
    before = sampled_reward(policy, template, problems["held_out"])
    cfg = GRPOConfig(steps=30, prompts_per_step=8, num_generations=8, max_prompt_length=32, max_completion_length=32,
                     learning_rate=1e-3, final_learning_rate=1e-3, beta=0.04, log_every=10, checkpoint_every=100)
    GRPOTrainer(policy, copy_of(sft_model), template, cfg, str(tmp_path_factory.mktemp("grpo"))).fit(problems["grpo"])
    return policy, before, sampled_reward(policy, template, problems["held_out"])


@pytest.mark.slow
def test_grpo_raises_held_out_reward(grpo_run, problems):
    _, before, after = grpo_run
    print(f"held-out reward (4 samples x {len(problems['held_out'])} problems, T=1): "
          f"{before['reward']:.3f} -> {after['reward']:.3f}; format {before['reward/format']:.3f} -> "
          f"{after['reward/format']:.3f}; accuracy {before['reward/accuracy']:.3f} -> {after['reward/accuracy']:.3f}")
    # seen: 0.273 -> 0.762 (format 0.270 -> 0.727)
    assert after["reward"] > before["reward"] + 0.2


def increment_problems(seed: int = 0) -> list[dict]:
    """"What is N + 1?" for 3-digit N: learnable by a 2-layer model in ~1000 steps, so the
    teacher is right ~98% of the time and a student has something to learn from it."""
    numbers = random.Random(seed).sample(range(10, 1000), 900)
    return [{"id": problem_id("arithmetic", f"What is {n} + 1?"), "task": "arithmetic",
             "prompt": f"What is {n} + 1?", "answer": str(n + 1), "reasoning": f"{n} + 1 = {n + 1}"} for n in numbers]


@pytest.mark.slow
def test_logit_distillation_student_learns_the_teacher(template, tmp_path):
    """The teacher is fine-tuned on reference solutions of half the problems (labelled);
    the student sees no reference solution at all, only the teacher's rejection-sampled
    answers to every training problem with the teacher's logits (forward KL); the baseline
    is the same student, same seed and token budget, trained on the labelled references
    without a teacher."""
    from stages.distill import DistillConfig, teacher_kl, teacher_samples
    from stages.trainer.loop import Teacher

    train_problems, held_out = split_problems(increment_problems(), 0.1)
    held_out = held_out[:64]
    half = len(train_problems) // 2
    labelled, unlabelled = train_problems[:half], train_problems[half:]
    teacher = train(ModelConfig.from_preset("tiny").replace(**MODEL),
                    pack(conversations(template, labelled), 128, template.pad_id), 1000, tmp_path / "teacher")
    teacher.trainable = False
    cfg = DistillConfig(samples_per_prompt=1, max_new_tokens=32, min_reward=2.0)
    samples, counts = teacher_samples(teacher, template, labelled + unlabelled, cfg)
    student_config = ModelConfig.from_preset("tiny").replace(**{**MODEL, "hidden_size": 48})
    distilled = train(student_config, pack([template.encode_conversation(c["messages"]) for c in samples], 128,
                                           template.pad_id), 500, tmp_path / "distilled",
                      teacher=Teacher(teacher, "forward_kl"))
    baseline = train(student_config, pack(conversations(template, labelled), 128, template.pad_id), 500,
                     tmp_path / "baseline")
    held_out_answers, _ = teacher_samples(teacher, template, held_out, dataclasses.replace(
        cfg, min_reward=float("-inf"), seed=7))
    kl_rows = pack([template.encode_conversation(c["messages"]) for c in held_out_answers], 128, template.pad_id)
    result = {}
    for name, model in (("teacher", teacher), ("distilled", distilled), ("baseline", baseline)):
        result[name] = {"teacher_kl": teacher_kl(model, teacher, kl_rows),
                        **evaluate_policy(model, template, held_out, REWARDS, 32)}
    print("teacher samples:", counts)
    for name, r in result.items():
        print(f"{name}: KL(teacher||model) {r['teacher_kl']:.4f}, held-out accuracy {r['reward/accuracy']:.3f}, "
              f"format {r['reward/format']:.3f}")
    # seen: teacher accuracy 0.984; distilled KL 0.016, accuracy 0.969; baseline KL 0.021, accuracy 0.984.
    # Both students saturate on this task, so the accuracy is asserted against a floor, not
    # against the baseline (the closing note of the post-training issue says more).
    assert result["teacher"]["reward/accuracy"] > 0.9
    assert result["distilled"]["teacher_kl"] < 0.9 * result["baseline"]["teacher_kl"]
    # the student never saw a reference solution: the teacher's answers taught it the task
    assert result["distilled"]["reward/accuracy"] > 0.8
