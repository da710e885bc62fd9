"""Stage `distill`: the post-trained model (teacher, `grpo`) into a smaller student
(preset `tiny-student`) that shares its tokenizer, as DeepSeek-R1 §2.4 did, plus the
logit-level variant.

1. Teacher samples: `samples_per_prompt` completions of each training problem at
   `temperature`, kept when their reward reaches `min_reward` (rejection sampling, R1);
   each kept one becomes a conversation. Every rejected sample is counted.
2. The student trains from random weights on those conversations with the trainer:
   method "sequence" = SFT on the samples (R1's distillation); "logit" = the divergence
   to the teacher's next-token distributions (forward_kl = KL(teacher || student) or
   reverse_kl = KL(student || teacher), at `kd_temperature`); "both" mixes them by
   `kd_weight`.
3. Baseline: the same student, same seed and same token budget (steps x batch x
   seq_len), trained on the data's reference solutions with no teacher (`train_baseline`).
Held-out: reward, accuracy and format of teacher, student and baseline on held-out
problems, and the students' per-token KL(teacher || student) on teacher completions.
"""

import dataclasses
import os
from typing import Any

from stages.config import ConfigError
from stages.posttrain import upstream
from stages.pretrain import publish_model
from stages.sft import assistant_loss, encode_all
from stages.trainer.config import TrainingConfig

METHODS = ("sequence", "logit", "both")


@dataclasses.dataclass(frozen=True)
class DistillConfig(TrainingConfig):
    student_preset: str = "tiny-student"
    student_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)   # e.g. {vocab_size: 1024}
    method: str = "logit"                # sequence | logit | both
    divergence: str = "forward_kl"       # forward_kl = KL(teacher || student) | reverse_kl = KL(student || teacher)
    kd_temperature: float = 1.0
    kd_weight: float = 0.5               # method "both": weight of the divergence against the LM loss
    # teacher samples (R1: ~800k samples, rejection-sampled)
    distill_prompts: int = 0             # training problems to sample (0: all)
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 64
    min_reward: float = 2.0              # keep a sample when its reward reaches this (accuracy + format = 2)
    reward_functions: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    train_baseline: bool = True
    # student training: R1 fine-tuned its students for 2 epochs at lr ~1e-5; a student
    # from random weights takes a pretraining-like rate
    learning_rate: float = 2e-3
    warmup_steps: int = 10
    final_learning_rate: float = 2e-4
    mtp_lambda: float = 0.0
    bias_update_gamma: float = 1e-3
    eval_problems: int = 64

    def validate(self, key):
        from model.losses import DIVERGENCES

        if self.method not in METHODS:
            raise ConfigError(f"{key}.method: one of {', '.join(METHODS)}, got {self.method!r}")
        if self.divergence not in DIVERGENCES:
            raise ConfigError(f"{key}.divergence: one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if self.kd_temperature <= 0 or not 0 <= self.kd_weight <= 1:
            raise ConfigError(f"{key}: need kd_temperature > 0 and 0 <= kd_weight <= 1")
        try:
            self.student_config()
        except ValueError as e:
            raise ConfigError(f"{key}.student_preset/student_overrides: {e}") from None

    def student_config(self):
        from model.config import ModelConfig

        return ModelConfig.from_preset(self.student_preset).replace(**self.student_overrides)


def teacher_samples(teacher, template, problems: list[dict], cfg: DistillConfig, batch_size: int = 64):
    """Rejection-sampled teacher conversations and the counts of kept and rejected samples."""
    from stages.posttrain.rewards import combined_reward

    prompts = [(p, template.encode_prompt(p["prompt"])) for p in problems for _ in range(cfg.samples_per_prompt)]
    conversations, rejected = [], {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        outs = teacher.generate([ids for _, ids in chunk], cfg.max_new_tokens, temperature=cfg.temperature,
                                seed=cfg.seed + start)
        for (problem, _), ids in zip(chunk, outs):
            reply = template.decode_reply(ids)
            if template.eos_id not in ids:
                rejected["unfinished"] = rejected.get("unfinished", 0) + 1
                continue
            total, _ = combined_reward(reply, problem, cfg.reward_functions)
            if total < cfg.min_reward:
                rejected["low_reward"] = rejected.get("low_reward", 0) + 1
                continue
            conversations.append({"id": f"{problem['id']}-{len(conversations)}", "messages": [
                {"role": "user", "content": problem["prompt"]}, {"role": "assistant", "content": reply}]})
    return conversations, {"sampled": len(prompts), "kept": len(conversations), "rejected_by_reason": rejected}


def reference_conversations(problems: list[dict]) -> list[dict]:
    from stages.posttrain.tasks import worked_solution

    return [{"id": p["id"], "messages": [{"role": "user", "content": p["prompt"]},
                                         {"role": "assistant", "content": worked_solution(p)}]} for p in problems]


def teacher_kl(student, teacher, rows) -> float:
    """Mean per-token KL(teacher || student) over the assistant tokens of packed rows."""
    from model.losses import distillation_loss
    from stages.posttrain.policy_eval import mean_over_targets

    def batch_kl(batch, count):
        ids, where = batch["token_ids"], dict(segment_ids=batch["segment_ids"], position_ids=batch["position_ids"])
        return distillation_loss(student(ids, **where), teacher(ids, **where), ids, "forward_kl", 1.0,
                                 batch["loss_mask"], batch["segment_ids"], count)
    return mean_over_targets(rows, batch_kl)


def train_student(cfg: DistillConfig, rows, work_dir: str, teacher=None, log_metrics=None,
                  discard_unreadable: bool = False):
    from stages.trainer.input import array_dataset
    from stages.trainer.loop import Teacher, Trainer

    if teacher is not None:
        teacher = Teacher(teacher, cfg.divergence, cfg.kd_temperature, 1.0 if cfg.method == "logit" else cfg.kd_weight)
    trainer = Trainer(cfg.student_config(), cfg, work_dir, log_metrics=log_metrics, teacher=teacher, section="distill")
    features = rows.features()
    summary = trainer.fit_on(lambda batch, context, skip: array_dataset(features, batch, cfg.seed, context, skip),
                             discard_unreadable=discard_unreadable)
    return trainer.model, summary


def student_report(model, teacher, template, problems, kl_rows, cfg) -> dict:
    from stages.posttrain.policy_eval import evaluate_policy

    return {"teacher_kl": teacher_kl(model, teacher, kl_rows) if teacher is not None else None,
            **evaluate_policy(model, template, problems, cfg.reward_functions, cfg.max_new_tokens)}


def run(ctx):
    from stages import tracking

    cfg = ctx.config
    parent, data = ctx.inputs["grpo"], ctx.inputs["posttrain_data"]
    template = upstream.chat_template(ctx.inputs["tokenizer"])
    if template.tokenizer.get_vocab_size() > cfg.student_config().vocab_size:
        raise ValueError(f"the student's vocab_size {cfg.student_config().vocab_size} is below the teacher "
                         f"tokenizer's {template.tokenizer.get_vocab_size()}: the student must share it")
    problems = data.records("prompts_train")
    problems = problems[:cfg.distill_prompts] if cfg.distill_prompts else problems
    held_out = data.records("prompts_held_out")[:cfg.eval_problems]
    teacher = parent.load()
    teacher.trainable = False

    ctx.log(f"sampling the teacher: {cfg.samples_per_prompt} completions of {len(problems)} problems")
    conversations, sampling = teacher_samples(teacher, template, problems, cfg)
    rows = encode_all(template, conversations, cfg.seq_len)
    if len(rows.token_ids) < cfg.global_batch_size:
        raise ValueError(f"only {sampling['kept']} of {sampling['sampled']} teacher samples passed min_reward "
                         f"{cfg.min_reward}: too few for one batch; lower min_reward or sample more")
    held_out_conversations, _ = teacher_samples(teacher, template, held_out, dataclasses.replace(
        cfg, samples_per_prompt=1, min_reward=float("-inf"), seed=cfg.seed + 7))
    kl_rows = encode_all(template, held_out_conversations, cfg.seq_len)
    ml = tracking.mlflow()
    log = lambda prefix: lambda metrics, step: ml.log_metrics({f"{prefix}/{k}": v for k, v in metrics.items()},  # noqa: E731
                                                              step=step)
    ctx.log(f"training the student ({cfg.method}) on {sampling['kept']} samples, {cfg.steps} steps")
    student, summary = train_student(cfg, rows, os.path.join(ctx.work_dir, "student"),
                                     teacher if cfg.method != "sequence" else None, log("student"), ctx.force)
    report = {"teacher": student_report(teacher, None, template, held_out, kl_rows, cfg),
              "student": student_report(student, teacher, template, held_out, kl_rows, cfg)}
    report["student"]["assistant_loss_on_teacher_samples"] = assistant_loss(student, kl_rows)
    if cfg.train_baseline:
        ctx.log("training the baseline student on the reference solutions, same token budget")
        baseline_rows = encode_all(template, reference_conversations(problems), cfg.seq_len)
        baseline, _ = train_student(cfg, baseline_rows, os.path.join(ctx.work_dir, "baseline"), None, log("baseline"),
                                    ctx.force)
        report["baseline"] = student_report(baseline, teacher, template, held_out, kl_rows, cfg)
    model_uri = publish_model(ctx, student, os.path.join(ctx.work_dir, "student", "metrics.jsonl"),
                              lineage={"parent_model": parent.mlflow_model, "teacher_model": parent.mlflow_model,
                                       "training_data": data.uri})
    return {"model": "model", "checkpoint": "checkpoint/final", "steps": cfg.steps, "mlflow_model": model_uri,
            "student_parameters": student.count_params(), "teacher_samples": sampling, "held_out": report,
            "final": {k: v for k, v in summary.items() if "/moe_" not in k}}
