"""Post-training does what it is for, measured on held-out problems with a model small
enough for 2 CPU cores: SFT teaches the reply format, GRPO from that model raises the
mean held-out reward, and a logit-distilled student is closer to its teacher than the
same student trained on the same teacher answers without the logits, and learns the
teacher's skill from its answers alone.

Each effect is computed by a function of a seed (grpo_effect, distillation_effect) that
the test runs with seed 0. A seed fixes every number on one machine (the same seed gave
bit-identical results in separate processes), but not across machines: TensorFlow's CPU
kernels split their work by the intra-op thread count (one thread per core by default),
a different split rounds differently, and a few hundred training steps amplify that into
a different run, as large a change as a new seed (seed 0 with 1 thread instead of 2: KL
ratio 0.340 instead of 0.370). So each margin asserted was chosen from runs of the same
function over 10 (GRPO) and 12 (distillation) seeds, numbers in the comments, and sits
well inside the worst of them."""

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
GENERATION_BATCH = 512     # one batched generation instead of many small ones: ~6x faster on CPU


@pytest.fixture(scope="module", autouse=True)
def deterministic_ops():
    """TensorFlow's deterministic kernels for this module's tests, as they would be on an
    accelerator (on CPU the numbers were the same with and without). Turned off again
    after the module, so other tests keep TensorFlow's defaults."""
    from tensorflow.python.framework import config   # disable_op_determinism is not exported

    was_enabled = config.is_op_determinism_enabled()
    config.enable_op_determinism()
    yield
    if not was_enabled:
        config.disable_op_determinism()


def conversations(template, problems):
    return [template.encode_conversation([{"role": "user", "content": p["prompt"]},
                                          {"role": "assistant", "content": worked_solution(p)}]) for p in problems]


def train(model_config, rows, steps, work_dir, learning_rate=3e-3, teacher=None, seed=0):
    cfg = TrainingConfig(steps=steps, seq_len=rows.token_ids.shape[1], global_batch_size=16,
                         learning_rate=learning_rate, warmup_steps=10, decay_steps=steps - 10,
                         final_learning_rate=learning_rate / 10, jit_compile=True, log_every=steps,
                         checkpoint_every=10 * steps, mtp_lambda=0.0, seed=seed)
    trainer = Trainer(model_config, cfg, str(work_dir), teacher=teacher)
    features = rows.features()
    trainer.fit_on(lambda batch, context, skip: array_dataset(features, batch, seed, context, skip))
    return trainer.model


def sampled_reward(model, template, problems, seed):
    return evaluate_policy(model, template, problems, REWARDS, 32, samples=4, temperature=1.0, seed=seed,
                           batch_size=GENERATION_BATCH)


def copy_of(model):
    clone = DeepSeekV3CausalLM(model.cfg)
    clone.set_weights(model.get_weights())
    return clone


def grpo_effect(template, work_dir, seed: int = 0) -> tuple[dict, dict]:
    """The sampled held-out reward (4 samples x 64 problems, T=1) of a model briefly
    fine-tuned from random weights (80 SFT steps: the format half learned), before and
    after 30 GRPO steps from it. The seed draws the problems and seeds SFT, GRPO and the
    evaluation's sampling."""
    from stages.grpo import GRPOConfig
    from stages.posttrain.grpo_trainer import GRPOTrainer

    generated, _ = generate_problems(seed, 1500, ["arithmetic"], 0, 20)
    train_problems, held_out = split_problems(generated, 0.1)
    half = len(train_problems) // 2
    sft_problems, grpo_problems, held_out = train_problems[:half], train_problems[half:], held_out[:64]
    sft_model = train(ModelConfig.from_preset("tiny").replace(**MODEL),
                      pack(conversations(template, sft_problems), 128, template.pad_id), 80, work_dir / "sft",
                      seed=seed)
    policy = copy_of(sft_model)
    before = sampled_reward(policy, template, held_out, seed + 1)
    cfg = GRPOConfig(steps=30, prompts_per_step=8, num_generations=8, max_prompt_length=32, max_completion_length=32,
                     learning_rate=1e-3, final_learning_rate=1e-3, beta=0.04, log_every=10, checkpoint_every=100,
                     seed=seed)
    GRPOTrainer(policy, copy_of(sft_model), template, cfg, str(work_dir / "grpo")).fit(grpo_problems)
    return before, sampled_reward(policy, template, held_out, seed + 1)


@pytest.mark.slow
def test_grpo_raises_held_out_reward(template, tmp_path):
    before, after = grpo_effect(template, tmp_path)
    print(f"held-out reward (4 samples x 64 problems, T=1): {before['reward']:.3f} -> {after['reward']:.3f}; "
          f"format {before['reward/format']:.3f} -> {after['reward/format']:.3f}; "
          f"accuracy {before['reward/accuracy']:.3f} -> {after['reward/accuracy']:.3f}")
    # seen (seed 0): 0.309 -> 0.738 (format 0.305 -> 0.711). Over seeds 0-9 the gain was
    # min 0.430, median 0.510, max 0.613 (before 0.16-0.31, after 0.74-0.85): GRPO mostly
    # teaches the format the 80 SFT steps half taught.
    assert after["reward"] > before["reward"] + 0.2


def increment_problems(seed: int = 0) -> list[dict]:
    """"What is N + 1?" for 3-digit N: learnable by a 2-layer model in a few hundred
    steps, so the teacher is mostly right and a student has something to learn from it."""
    numbers = random.Random(seed).sample(range(10, 1000), 900)
    return [{"id": problem_id("arithmetic", f"What is {n} + 1?"), "task": "arithmetic",
             "prompt": f"What is {n} + 1?", "answer": str(n + 1), "reasoning": f"{n} + 1 = {n + 1}"} for n in numbers]


TEACHER_TEMPERATURE = 1.5
TEACHER_STEPS, STUDENT_STEPS = 500, 700


def distillation_effect(template, work_dir, seed: int = 0) -> dict:
    """Teacher, logit-distilled student and sequence-distilled student: each one's
    KL(teacher || model) per token on the teacher's (unfiltered) answers to 64 held-out
    problems, and its greedy held-out reward, accuracy and format.

    The teacher is fine-tuned on reference solutions of half the training problems
    (labelled), then made soft: its output projection is divided by
    TEACHER_TEMPERATURE, so it is the same model sampled at that temperature, with the
    same greedy answers. A teacher fine-tuned to near one-hot distributions (entropy
    ~0.01 nats per token) makes its logits say no more than its samples do, and the
    comparison below a coin flip; a real teacher on real data is far from one-hot.

    Both students see no reference solution at all, only the teacher's rejection-sampled
    answers to every training problem (one sample each, kept when right and well
    formed); the distilled one trains on the teacher's logits (forward KL), the other,
    the same student with the same seed, steps and rows, on the answers' tokens alone
    (method "sequence", DeepSeek-R1's distillation)."""
    from stages.distill import DistillConfig, teacher_kl, teacher_samples
    from stages.trainer.loop import Teacher

    train_problems, held_out = split_problems(increment_problems(seed), 0.1)
    held_out = held_out[:64]
    half = len(train_problems) // 2
    labelled, unlabelled = train_problems[:half], train_problems[half:]
    teacher = train(ModelConfig.from_preset("tiny").replace(**MODEL),
                    pack(conversations(template, labelled), 128, template.pad_id), TEACHER_STEPS, work_dir / "teacher",
                    seed=seed)
    teacher.trainable = False
    teacher.lm_head.kernel.assign(teacher.lm_head.kernel / TEACHER_TEMPERATURE)
    cfg = DistillConfig(samples_per_prompt=1, max_new_tokens=32, min_reward=2.0, seed=seed)
    samples, counts = teacher_samples(teacher, template, labelled + unlabelled, cfg, batch_size=GENERATION_BATCH)
    rows = pack([template.encode_conversation(c["messages"]) for c in samples], 128, template.pad_id)
    student_config = ModelConfig.from_preset("tiny").replace(**{**MODEL, "hidden_size": 48})
    distilled = train(student_config, rows, STUDENT_STEPS, work_dir / "distilled",
                      teacher=Teacher(teacher, "forward_kl"), seed=seed)
    sequence = train(student_config, rows, STUDENT_STEPS, work_dir / "sequence", seed=seed)
    held_out_answers, _ = teacher_samples(teacher, template, held_out, dataclasses.replace(
        cfg, min_reward=float("-inf"), seed=seed + 7), batch_size=GENERATION_BATCH)
    kl_rows = pack([template.encode_conversation(c["messages"]) for c in held_out_answers], 128, template.pad_id)
    result = {"teacher_samples": counts}
    for name, model in (("teacher", teacher), ("distilled", distilled), ("sequence", sequence)):
        result[name] = {"teacher_kl": teacher_kl(model, teacher, kl_rows),
                        **evaluate_policy(model, template, held_out, REWARDS, 32)}
    return result


@pytest.mark.slow
def test_logit_distillation_student_learns_the_teacher(template, tmp_path):
    result = distillation_effect(template, tmp_path)
    print("teacher samples:", result["teacher_samples"])
    for name in ("teacher", "distilled", "sequence"):
        r = result[name]
        print(f"{name}: KL(teacher||model) {r['teacher_kl']:.4f}, held-out accuracy {r['reward/accuracy']:.3f}, "
              f"format {r['reward/format']:.3f}")
    # seen (seed 0): teacher accuracy 0.922 (531 of 814 samples kept); distilled KL 0.080,
    # accuracy 0.969; sequence KL 0.215, accuracy 0.969. Over seeds 0-11: KL ratio distilled
    # / sequence min 0.262, median 0.391, max 0.472; teacher accuracy min 0.750, median 0.891;
    # distilled accuracy min 0.531 (seed 9, whose teacher was the weakest, 0.750 with 204
    # samples kept), median 0.875; distilled / teacher accuracy min 0.71, median 1.04.
    # With 400 student steps instead of 700 the ratio reached 1.09 (seed 3): a student that
    # has not yet learned to copy the digits is far from the teacher whatever it trains on,
    # so both students train until they have.
    assert result["teacher"]["reward/accuracy"] > 0.6
    assert result["distilled"]["teacher_kl"] < 0.7 * result["sequence"]["teacher_kl"]
    # the student never saw a reference solution: the teacher's answers taught it the task
    assert result["distilled"]["reward/accuracy"] > 0.5 * result["teacher"]["reward/accuracy"]
