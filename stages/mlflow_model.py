"""Trained checkpoints as MLflow models: a pyfunc that loads the Keras weights and
generates text, logged and registered by the training stages so the MLflow UI shows,
for each model version, the run (and through its lineage tags, the data) behind it.

    mlflow models serve -m models:/tiny-pretrain/1 --env-manager local
    curl -d '{"inputs": {"prompt": ["def add(a, b):"]}}' ...
"""

import os

import mlflow.pyfunc

from stages import lineage_links

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CausalLMGenerator(mlflow.pyfunc.PythonModel):
    """predict: a column "prompt" of strings -> the generated continuations."""

    def load_context(self, context):
        from tokenizers import Tokenizer

        from stages.artifact_types import load_model_dir

        self.model = load_model_dir(context.artifacts["model"])
        self.tokenizer = Tokenizer.from_file(context.artifacts["tokenizer"])

    def predict(self, context, model_input, params=None):
        params = params or {}
        prompts = list(model_input["prompt"])
        ids = [self.tokenizer.encode(p).ids for p in prompts]
        out = self.model.generate(ids, int(params.get("max_new_tokens", 64)),
                                  temperature=float(params.get("temperature", 0.0)))
        return [self.tokenizer.decode(o) for o in out]


def log_and_register(model_dir: str, tokenizer_path: str, registered_name: str,
                     lineage: dict[str, str] | None = None) -> str:
    """Log the model under the active run and register a new version; returns its URI.
    lineage: tags for the model version, e.g. {"parent_model": "models:/tiny-sft/1",
    "training_data": the data output's URI}, so the registry shows what it came from."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 64), ParamSpec("temperature", "double", 0.0)]))
    info = mlflow.pyfunc.log_model(
        name="model", python_model=CausalLMGenerator(), signature=signature,
        artifacts={"model": model_dir, "tokenizer": tokenizer_path},
        code_paths=[os.path.join(REPO_ROOT, "model"), os.path.join(REPO_ROOT, "stages")],
        pip_requirements=["tensorflow", "keras>=3.8", "tokenizers", "numpy"],
        registered_model_name=registered_name)
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        tag_version(mlflow.MlflowClient(), registered_name, str(version), mlflow.active_run(), lineage or {})
    return info.model_uri


def tag_version(client, name: str, version: str, run, lineage: dict[str, str]) -> None:
    """The registry's view of lineage: the version's tags (seekforge.source_run and the
    lineage keys) and a description linking the run that made it; the registered model
    says which stage publishes it."""
    stage = lineage.get("stage", "?")
    for key, value in {"source_run": run.info.run_id, **lineage}.items():
        client.set_model_version_tag(name, version, f"seekforge.{key}", value)
    client.update_model_version(name, version, description=lineage_links.version_description(
        stage, lineage.get("pipeline_run", "?"), run.info.experiment_id, run.info.run_id))
    client.set_registered_model_tag(name, "seekforge.stage", stage)
    client.update_registered_model(name, description=(
        f"Models published by the seekforge stage **{stage}**, one version per run that trained one; "
        "each version links its run and is tagged with its pipeline run, stage and cache key."))
