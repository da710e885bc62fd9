"""Stage `pretrain`: the trainer on the packed shards of `tokenize`, from random weights.

Outputs (beside manifest.json):
    model/config.json, model/model.weights.h5   the trained model (HF config + Keras weights)
    checkpoint/                                  the final training checkpoint (downstream init)
    metrics.jsonl                                the logged training metrics
The trainer follows the Keras backend: TensorFlow's (data parallelism by `strategy`), or
with KERAS_BACKEND=jax the JAX trainer on the device mesh of `pretrain.distribution`
(expert parallelism, ZeRO); the outputs are the same either way.
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
    """Shared by pretrain and the context-extension stages. The trainer follows the Keras
    backend: TensorFlow (stages/trainer/loop.py, `strategy`), or with KERAS_BACKEND=jax
    the JAX trainer on the device mesh of the section's `distribution`
    (stages/trainer/jax_trainer.py); both publish the same files."""
    import keras

    from stages import tracking

    special = tokenizer_special_ids(ctx.inputs["tokenizer"])
    if special["vocab_size"] > model_config.vocab_size:
        raise ValueError(f"the tokenizer has {special['vocab_size']} tokens, more than model.vocab_size "
                         f"({model_config.vocab_size})")
    if special["eos"] != model_config.eos_token_id:
        raise ValueError(f"the tokenizer's EOS id {special['eos']} is not the model's eos_token_id "
                         f"({model_config.eos_token_id})")
    ml = tracking.mlflow()
    log_metrics = lambda metrics, step: ml.log_metrics(metrics, step=step)   # noqa: E731
    shards = ctx.inputs["tokenize"].directory
    if keras.backend.backend() == "jax":
        from stages.trainer.jax_trainer import JaxTrainer

        work_dir = os.path.join(ctx.work_dir, "jax")   # apart from a TensorFlow run's checkpoints
        trainer = JaxTrainer(model_config, ctx.config, work_dir, log_metrics=log_metrics)
        summary = trainer.fit(shards, special["eos"], init_weights=init_checkpoint)
        model, chief = trainer.trained_model(), trainer.chief
    else:
        from stages.trainer.loop import Trainer

        work_dir = ctx.work_dir
        trainer = Trainer(model_config, ctx.config, work_dir, log_metrics=log_metrics, section=ctx.stage)
        summary = trainer.fit(shards, special["eos"], init_weights=init_checkpoint, discard_unreadable=ctx.force)
        model, chief = trainer.model, True
    model_uri = publish_model(ctx, model, os.path.join(work_dir, "metrics.jsonl")) if chief else None
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
    checkpoint/final (every variable, what a downstream training stage starts from), on
    either Keras backend, with the same checkpoint keys."""
    import keras

    from stages.trainer import model_checkpoint

    model_dir = os.path.join(output_dir, "model")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(model.cfg.to_hf(), f, indent=2)
    model.save_weights(os.path.join(model_dir, "model.weights.h5"))
    prefix = os.path.join(output_dir, "checkpoint", "final")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        from stages.trainer.optimizer import model_variables
        tf.train.Checkpoint(model=model_variables(model)).write(prefix)
    else:
        model_checkpoint.write_values(prefix, {model_checkpoint.variable_path(v): keras.ops.convert_to_numpy(v.value)
                                               for v in model.variables})


def run(ctx):
    return train_stage(ctx, ctx.section("model").build())
