"""The pretrain stage on the JAX trainer (`seekforge run pretrain` with KERAS_BACKEND=jax
and a data 2 x expert 4 mesh) publishes what the TensorFlow path publishes: a downstream
TensorFlow stage reads its checkpoint/final and model/ unchanged and finds the trainer's
final values; and the JAX trainer starts from a TensorFlow stage's checkpoint/final."""

import os
import re

import numpy as np
import pytest
import yaml

from model.config import ModelConfig
from stages import artifacts, cli
from stages.config import from_dict
from stages.trainer import model_checkpoint
from stages.trainer.config import TrainingConfig
from stages.trainer.jax_trainer import JaxTrainer
from tests.stages.trainer.conftest import MODEL
from tests.stages.trainer.multihost_launch import launch
from tests.stages.trainer.synthetic_shards import write_shards

pytestmark = pytest.mark.slow

TRAINING = dict(steps=3, seq_len=32, global_batch_size=16, learning_rate=3e-3, warmup_steps=1, log_every=1,
                checkpoint_every=3, keep_checkpoints=1)
MESH = ["--set", "pretrain.distribution.data=2", "--set", "pretrain.distribution.expert=4"]
TENSORFLOW = {"KERAS_BACKEND": "tensorflow"}
PROGRAMS = "tests.parallel.tensorflow_programs"


def publish_input(directory: str, stage: str, artifact: str, results: dict) -> str:
    """directory as a published output of `stage` (a manifest over its files)."""
    artifacts.write_json_atomic(os.path.join(directory, artifacts.MANIFEST), {
        "stage": stage, "artifact": artifact, "cache_key": f"{stage}-key", "digest": f"{stage}-digest",
        "run_id": f"{stage}-run", "results": results, "files": artifacts.inventory(directory)})
    return directory


def tokenizer_output(directory: str) -> str:
    """A word-level tokenizer whose ids match the synthetic shards' (EOS 1, vocabulary 128)."""
    from tokenizers import Tokenizer, models

    os.makedirs(directory)
    vocab = {"<｜begin▁of▁sentence｜>": 0, "<｜end▁of▁sentence｜>": 1,
             **{f"t{i}": i for i in range(2, MODEL["vocab_size"])}}
    Tokenizer(models.WordLevel(vocab, unk_token="t2")).save(os.path.join(directory, "tokenizer.json"))
    return publish_input(directory, "tokenizer", "tokenizer", {"tokenizer": "tokenizer.json"})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, devices):
    """The pretrain stage run through the CLI on the 8-device mesh: (its published output,
    {"initial"|"final": the trainer's model values by variable path})."""
    tmp = tmp_path_factory.mktemp("stage")
    shards = publish_input(write_shards(str(tmp / "shards"), seq_len=32), "tokenize", "shards",
                           {"index": "index.json"})
    tokenizer = tokenizer_output(str(tmp / "tokenizer"))
    preset = tmp / "preset.yaml"
    preset.write_text(yaml.safe_dump({"pipeline": {"name": "jax", "artifacts": str(tmp / "artifacts")},
                                      "model": {"preset": "tiny", "overrides": MODEL}, "pretrain": TRAINING}))
    values = {"initial": {}, "final": {}}   # the trainer's own model values, before any export
    start, trained_model = JaxTrainer.start, JaxTrainer.trained_model

    def record(trainer, state, into):
        variables = trainer.model.trainable_variables + trainer.model.non_trainable_variables
        into.update({model_checkpoint.variable_path(v): np.asarray(value)
                     for v, value in zip(variables, state[0] + state[1])})

    def recording_start(trainer, *args, **kwargs):
        state, step = start(trainer, *args, **kwargs)
        record(trainer, state, values["initial"])
        return state, step

    def recording_trained_model(trainer):
        record(trainer, trainer.state, values["final"])
        return trained_model(trainer)

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        patch.setattr(JaxTrainer, "start", recording_start)
        patch.setattr(JaxTrainer, "trained_model", recording_trained_model)
        assert cli.main(["run", "pretrain", "--config", str(preset), *MESH, "--input", f"tokenize={shards}",
                         "--input", f"tokenizer={tokenizer}"]) == 0
    output = artifacts.latest(artifacts.stage_root(str(tmp / "artifacts"), "jax", "pretrain"))
    return output, values


@pytest.fixture(scope="module")
def tensorflow_side(pretrained, tmp_path_factory):
    """tensorflow_programs.downstream run on the published output: ({"checkpoint"|"h5"|
    "tensorflow": values by path}, the prefix of the TensorFlow path's checkpoint/final)."""
    tmp = tmp_path_factory.mktemp("tensorflow")
    output, _ = pretrained
    [result] = launch(f"{PROGRAMS}:downstream", dict(output_dir=output.uri, model=MODEL, export_dir=str(tmp / "out"),
                                                     values_file=str(tmp / "values.npz")),
                      processes=1, devices_per_process=1, timeout=300, env=TENSORFLOW)
    assert result["backend"] == "tensorflow"
    read = {"checkpoint": {}, "h5": {}, "tensorflow": {}}
    with np.load(tmp / "values.npz") as values:
        for key in values.files:
            source, path = key.split("/", 1)
            read[source][path] = values[key]
    return read, str(tmp / "out" / "checkpoint" / "final")


def test_a_tensorflow_stage_reads_the_published_model_with_the_trainers_final_values(pretrained, tensorflow_side):
    output, values = pretrained
    assert output.manifest["key_material"]["sections"]["pretrain"]["distribution"]["expert"] == 4
    initial, final = values["initial"], values["final"]
    assert initial.keys() == final.keys()
    unchanged = [path for path in final if np.array_equal(final[path], initial[path])]
    assert not unchanged, f"not trained: {unchanged}"
    read, _ = tensorflow_side
    for source in ("checkpoint", "h5"):
        assert read[source].keys() == final.keys(), source
        for path, value in final.items():
            np.testing.assert_array_equal(read[source][path], value, err_msg=f"{source}: {path}")


def test_the_checkpoint_has_the_tensorflow_paths_keys(pretrained, tensorflow_side):
    import tensorflow as tf

    def layout(prefix):
        reader = tf.train.load_checkpoint(prefix)
        return reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    output, _ = pretrained
    assert layout(output.path("checkpoint/final")) == layout(tensorflow_side[1])


def mesh_trainer(output_dir) -> JaxTrainer:
    cfg = from_dict(TrainingConfig, {**TRAINING, "distribution": {"data": 2, "expert": 4}}, "pretrain")
    return JaxTrainer(ModelConfig.from_preset("tiny").replace(**MODEL), cfg, str(output_dir))


def test_the_jax_trainer_starts_from_a_tensorflow_stages_checkpoint(tensorflow_side, tmp_path):
    read, prefix = tensorflow_side
    expected = read["tensorflow"]
    trainer = mesh_trainer(tmp_path)
    (trainable, non_trainable, optimizer_values), step = trainer.start(init_weights=prefix)
    assert step == 0
    variables = trainer.model.trainable_variables + trainer.model.non_trainable_variables
    shardings = trainer.step_fn.shardings
    for variable, value, sharding in zip(variables, trainable + non_trainable, shardings[0] + shardings[1]):
        assert value.sharding == sharding, variable.path
        np.testing.assert_array_equal(np.asarray(value), expected[model_checkpoint.variable_path(variable)])
    for value, fresh in zip(optimizer_values, trainer.step_fn.initial_state()[2]):   # the optimizer starts fresh
        np.testing.assert_array_equal(np.asarray(value), np.asarray(fresh))


def test_a_checkpoint_lacking_a_variable_is_named(tensorflow_side, tmp_path):
    values = tensorflow_side[0]["tensorflow"]
    lacking = "layers_1/mlp/experts/up_proj"
    assert lacking in values
    prefix = model_checkpoint.write_values(str(tmp_path / "partial" / "final"),
                                           {k: v for k, v in values.items() if k != lacking})
    with pytest.raises(model_checkpoint.CheckpointError,
                       match=rf"partial/final: 1 of the model's \d+ variables .*\(e\.g\. {re.escape(lacking)}\)"):
        mesh_trainer(tmp_path / "run").start(init_weights=prefix)
