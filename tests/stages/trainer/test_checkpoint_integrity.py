"""Checkpoints are restored whole or not at all: a checkpoint that lacks any model
variable is refused (it used to be "restored" with expect_partial, leaving random
weights), a corrupt resume checkpoint is named, and --force (discard_unreadable)
discards it and starts over. A resumed run's metrics.jsonl has each step once."""

import glob
import json
import os

import pytest
import tensorflow as tf

from model.config import ModelConfig
from model.transformer import DeepSeekV3CausalLM
from stages.trainer.config import TrainingConfig
from stages.trainer.loop import METRICS_FILE, Trainer
from stages.trainer.metrics_log import truncate_metrics
from stages.trainer.optimizer import CheckpointError, load_weights, model_variables
from tests.stages.trainer.conftest import MODEL

TRAINING = dict(steps=4, seq_len=32, global_batch_size=4, learning_rate=1e-2, warmup_steps=1, log_every=1,
                checkpoint_every=2, seed=3)


def write_checkpoint(model, prefix):
    tf.train.Checkpoint(model=model_variables(model)).write(prefix)


def test_a_checkpoint_missing_model_variables_is_refused(tmp_path):
    small = DeepSeekV3CausalLM(ModelConfig(**MODEL))
    write_checkpoint(small, str(tmp_path / "small" / "final"))
    deeper = DeepSeekV3CausalLM(ModelConfig(**{**MODEL, "num_hidden_layers": MODEL["num_hidden_layers"] + 1}))
    with pytest.raises(CheckpointError, match=r"small/final: \d+ of the model's \d+ variables are not in this"):
        load_weights(deeper, str(tmp_path / "small" / "final"))
    wider = DeepSeekV3CausalLM(ModelConfig(**{**MODEL, "hidden_size": 2 * MODEL["hidden_size"]}))
    with pytest.raises(CheckpointError, match="are not in this checkpoint"):   # same names, other shapes
        load_weights(wider, str(tmp_path / "small" / "final"))
    same = DeepSeekV3CausalLM(ModelConfig(**MODEL))
    load_weights(same, str(tmp_path / "small" / "final"))
    for a, b in zip(small.variables, same.variables):
        assert (a.numpy() == b.numpy()).all()


def train(work_dir, shard_dir, discard=False, **changes):
    trainer = Trainer(ModelConfig(**MODEL), TrainingConfig(**{**TRAINING, **changes}), str(work_dir))
    trainer.fit(shard_dir, eos_id=1, discard_unreadable=discard)
    return trainer


@pytest.mark.slow
def test_a_corrupt_resume_checkpoint_is_named_and_force_discards_it(tmp_path, shard_dir):
    train(tmp_path / "run", shard_dir, steps=2)
    [data] = glob.glob(str(tmp_path / "run" / "checkpoints" / "ckpt-2.data-*"))
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError, match=r"ckpt-2: the resume checkpoint cannot be restored .*--force"):
        train(tmp_path / "run", shard_dir)
    trainer = train(tmp_path / "run", shard_dir, discard=True)
    assert trainer.step == TRAINING["steps"]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / METRICS_FILE)]
    assert steps == [1, 2, 3, 4], "the discarded run's metrics are not kept twice"


def test_resumed_metrics_keep_each_step_once(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4, 5)))
    truncate_metrics(str(path), 2)
    assert [json.loads(line)["step"] for line in open(path)] == [1, 2]
    truncate_metrics(str(tmp_path / "absent.jsonl"), 2)   # nothing logged yet: nothing to do


def test_unreadable_exported_weights_are_named(tmp_path):
    from stages.artifact_types import WEIGHTS_FILE, load_model_dir

    model = DeepSeekV3CausalLM(ModelConfig(**MODEL))
    (tmp_path / "config.json").write_text(json.dumps(model.cfg.to_hf()))
    model.save_weights(str(tmp_path / WEIGHTS_FILE))
    load_model_dir(str(tmp_path))
    with open(tmp_path / WEIGHTS_FILE, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: cannot load the model's weights"):
        load_model_dir(str(tmp_path))
