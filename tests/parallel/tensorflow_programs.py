"""What the JAX training-stage tests run in a TensorFlow-backend process
(tests/stages/trainer/multihost_launch.py with KERAS_BACKEND=tensorflow), in one process
to pay TensorFlow's start-up once."""

import os


def downstream(output_dir: str, model: dict, export_dir: str, values_file: str) -> dict:
    """1. A downstream stage's view of the model the JAX trainer published in output_dir:
    its checkpoint/final loaded as a TensorFlow training stage does
    (optimizer.load_weights), its model/ as the model artifact does.
    2. A seeded model of config `model` exported by the TensorFlow path into export_dir
    (pretrain.export_model), for the JAX trainer to start from.
    Every value goes to values_file (npz: checkpoint/PATH, h5/PATH, tensorflow/PATH)."""
    import keras
    import numpy as np

    from model.config import ModelConfig
    from model.transformer import DeepSeekV3CausalLM
    from stages.artifact_types import load_model_dir
    from stages.pretrain import export_model
    from stages.trainer.model_checkpoint import variable_path
    from stages.trainer.optimizer import load_weights

    model_dir = os.path.join(output_dir, "model")
    from_checkpoint = DeepSeekV3CausalLM(ModelConfig.from_hf(model_dir))
    load_weights(from_checkpoint, os.path.join(output_dir, "checkpoint", "final"))
    keras.utils.set_random_seed(7)
    exported = DeepSeekV3CausalLM(ModelConfig(**model))
    export_model(exported, export_dir)
    values = {}
    for name, source in (("checkpoint", from_checkpoint), ("h5", load_model_dir(model_dir)), ("tensorflow", exported)):
        values.update({f"{name}/{variable_path(v)}": v.numpy() for v in source.variables})
    np.savez(values_file, **values)
    return {"backend": keras.backend.backend()}
