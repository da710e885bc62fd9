"""Stage `pretrain`: the trainer on the packed shards of `tokenize`, from random weights.

Outputs (beside manifest.json):
    model/config.json, model/model.weights.h5   the trained model (HF config + Keras weights)
    checkpoint/                                  the final training checkpoint (downstream init)
    metrics.jsonl                                the logged training metrics
Checkpoints live in a work directory keyed by the stage's cache key, outside the
temporary output, so a killed run resumes where it stopped when the stage is rerun.
"""

import dataclasses
import json
import os
import shutil

from stages.trainer.config import TrainingConfig



@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainingConfig):
    pass


def tokenizer_special_ids(tokenizer_artifact) -> dict[str, int]:
    tokenizer = tokenizer_artifact.load()
    return {"vocab_size": tokenizer.get_vocab_size(), "eos": tokenizer.token_to_id("<｜end▁of▁sentence｜>")}


def train_stage(ctx, model_config, init_checkpoint: str | None = None) -> dict:
    """Shared by pretrain and the context-extension stages."""
    from stages import tracking
    from stages.trainer.loop import Trainer

    special = tokenizer_special_ids(ctx.inputs["tokenizer"])
    if special["vocab_size"] > model_config.vocab_size:
        raise ValueError(f"the tokenizer has {special['vocab_size']} tokens, more than model.vocab_size "
                         f"({model_config.vocab_size})")
    if special["eos"] != model_config.eos_token_id:
        raise ValueError(f"the tokenizer's EOS id {special['eos']} is not the model's eos_token_id "
                         f"({model_config.eos_token_id})")
    ml = tracking.mlflow()
    trainer = Trainer(model_config, ctx.config, ctx.work_dir,
                      log_metrics=lambda metrics, step: ml.log_metrics(metrics, step=step))
    summary = trainer.fit(ctx.inputs["tokenize"].directory, special["eos"], init_weights=init_checkpoint,
                          discard_unreadable=ctx.force)
    model_uri = publish_model(ctx, trainer.model, os.path.join(ctx.work_dir, "metrics.jsonl"))
    return {"model": "model", "checkpoint": "checkpoint/final", "steps": ctx.config.steps, "mlflow_model": model_uri,
            "final": {k: v for k, v in summary.items() if "/moe_" not in k}}


def publish_model(ctx, model, metrics_file: str, lineage: dict[str, str] | None = None) -> str:
    """What every training stage publishes: the exported model, its training metrics
    (metrics.jsonl) and an MLflow model registered as `<pipeline>-<stage>` with its
    lineage tags. Returns the logged model's URI."""
    from stages.mlflow_model import log_and_register

    export_model(model, ctx.output_dir)
    shutil.copy(metrics_file, os.path.join(ctx.output_dir, "metrics.jsonl"))
    made_by = {"pipeline_run": ctx.pipeline_run, "stage": ctx.stage, "cache_key": ctx.cache_key}
    return log_and_register(os.path.join(ctx.output_dir, "model"), ctx.inputs["tokenizer"].file,
                            f"{ctx.pipeline_name}-{ctx.stage}", {**made_by, **(lineage or {})})


def export_model(model, output_dir: str) -> None:
    """model/ (HF config.json + Keras weights, what later stages and MLflow load) and
    checkpoint/final (every variable, what a downstream training stage starts from)."""
    import tensorflow as tf

    from stages.trainer.optimizer import model_variables

    model_dir = os.path.join(output_dir, "model")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(model.cfg.to_hf(), f, indent=2)
    model.save_weights(os.path.join(model_dir, "model.weights.h5"))
    tf.train.Checkpoint(model=model_variables(model)).write(os.path.join(output_dir, "checkpoint", "final"))


def run(ctx):
    return train_stage(ctx, ctx.section("model").build())
