"""Trained checkpoints as MLflow models: a pyfunc that loads the Keras weights and
generates text, logged and registered by the training stages so the MLflow UI shows,
for each model version, the run (and through its lineage tags, the data) behind it.

    mlflow models serve -m models:/tiny-pretrain/1 --env-manager local
    curl -d '{"inputs": {"prompt": ["def add(a, b):"]}}' ...
"""

import os

import mlflow.pyfunc

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
    if lineage and version is not None:
        client = mlflow.MlflowClient()
        for key, value in lineage.items():
            client.set_model_version_tag(registered_name, str(version), f"seekforge.{key}", value)
    return info.model_uri
