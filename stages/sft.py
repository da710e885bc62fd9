"""Stage `sft`: supervised fine-tuning of the pretrain phase's final model on the chat
data of `posttrain_data` (V3 paper §5.1).

Conversations go through the DeepSeek chat template with the loss on assistant tokens
only, are packed into rows with per-sample attention masks and position resets, and train
with the pretraining trainer (same loop, checkpoints and resume). V3: 1.5M samples, 2
epochs, cosine 5e-6 -> 1e-6 (configs/v3-671b.yaml); `epochs` sets the step count from the
packed rows.

Before/after on held-out data: the assistant-token loss on held-out conversations, and
reward, accuracy and format compliance of greedy answers to held-out problems.
"""

import dataclasses
import math
import os

from stages.config import ConfigError
from stages.posttrain import upstream
from stages.posttrain.packing import pack
from stages.pretrain import publish_model
from stages.trainer.config import TrainingConfig

@dataclasses.dataclass(frozen=True)
class SFTConfig(TrainingConfig):
    epochs: float = 2.0                  # > 0: steps = epochs x packed rows / global batch
    learning_rate: float = 5e-6          # V3 SFT: cosine 5e-6 -> 1e-6
    final_learning_rate: float = 1e-6
    warmup_steps: int = 0
    mtp_lambda: float = 0.1              # keep the MTP module usable for speculative decoding
    bias_update_gamma: float = 0.0       # balancing is pretraining's; V3 ends it at gamma 0
    # held-out evaluation
    eval_problems: int = 64
    eval_max_new_tokens: int = 48
    reward_functions: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0})

    def validate(self, key):
        if self.epochs < 0:
            raise ConfigError(f"{key}.epochs: must be >= 0, got {self.epochs}")


def with_epochs(cfg: SFTConfig, rows: int) -> SFTConfig:
    """The step count (and the cosine's length, if not given) from `epochs` over `rows`."""
    if not cfg.epochs:
        return cfg
    steps = max(1, math.ceil(cfg.epochs * rows / cfg.global_batch_size))
    decay = cfg.decay_steps or max(steps - cfg.warmup_steps - cfg.constant_steps, 0)
    return dataclasses.replace(cfg, steps=steps, decay_steps=decay)


def assistant_loss(model, rows) -> float:
    """Mean cross-entropy over the assistant tokens of packed rows (the SFT objective)."""
    from model.losses import shifted_cross_entropy
    from stages.posttrain.policy_eval import mean_over_targets

    def batch_loss(batch, count):
        logits = model(batch["token_ids"], segment_ids=batch["segment_ids"], position_ids=batch["position_ids"])
        return shifted_cross_entropy(logits, batch["token_ids"], 1, batch["loss_mask"], batch["segment_ids"], count)
    return mean_over_targets(rows, batch_loss)


def held_out_report(model, template, held_out_rows, problems, cfg) -> dict:
    from stages.posttrain.policy_eval import evaluate_policy

    return {"assistant_loss": assistant_loss(model, held_out_rows),
            **evaluate_policy(model, template, problems, cfg.reward_functions, cfg.eval_max_new_tokens)}


def encode_all(template, conversations: list[dict], seq_len: int):
    samples = [template.encode_conversation(c["messages"], name=f"conversation {c.get('id', i)}")
               for i, c in enumerate(conversations)]
    return pack(samples, seq_len, template.pad_id)


def run(ctx):
    from stages import tracking
    from stages.posttrain.policy_eval import examples
    from stages.trainer.input import array_dataset
    from stages.trainer.loop import Trainer

    parent, data = ctx.inputs["extend_128k"], ctx.inputs["posttrain_data"]
    template = upstream.chat_template(ctx.inputs["tokenizer"])
    train_rows = encode_all(template, data.records("sft_train"), ctx.config.seq_len)
    held_out_rows = encode_all(template, data.records("sft_held_out"), ctx.config.seq_len)
    problems = data.records("prompts_held_out")[:ctx.config.eval_problems]
    cfg = with_epochs(ctx.config, len(train_rows.token_ids))
    ctx.log(f"{train_rows.samples} conversations in {len(train_rows.token_ids)} rows of {cfg.seq_len} "
            f"({train_rows.dropped_too_long} longer than a row, dropped); {cfg.steps} steps")

    ctx.log("held-out evaluation of the parent model")
    before = held_out_report(parent.load(), template, held_out_rows, problems, cfg)
    ml = tracking.mlflow()
    trainer = Trainer(parent.config(), cfg, ctx.work_dir,
                      log_metrics=lambda metrics, step: ml.log_metrics(metrics, step=step), section=ctx.stage)
    features = train_rows.features()
    summary = trainer.fit_on(lambda batch, context, skip: array_dataset(features, batch, cfg.seed, context, skip),
                             init_weights=parent.checkpoint, discard_unreadable=ctx.force)
    ctx.log("held-out evaluation of the fine-tuned model")
    after = held_out_report(trainer.model, template, held_out_rows, problems, cfg)
    model_uri = publish_model(ctx, trainer.model, os.path.join(ctx.work_dir, "metrics.jsonl"),
                              lineage={"parent_model": parent.mlflow_model,
                                       "training_data": data.uri})
    return {"model": "model", "checkpoint": "checkpoint/final", "steps": cfg.steps, "mlflow_model": model_uri,
            "packing": {"rows": len(train_rows.token_ids), "conversations": train_rows.samples,
                        "dropped_too_long": train_rows.dropped_too_long, "target_tokens": train_rows.target_tokens},
            "held_out": {"before": before, "after": after},
            "examples": examples(trainer.model, template, problems, cfg.eval_max_new_tokens),
            "final": {k: v for k, v in summary.items() if "/moe_" not in k}}
