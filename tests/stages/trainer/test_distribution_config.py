"""The `distribution` section of the training configs: a device mesh, which only the JAX
trainer runs (tests/parallel/test_training_stage.py runs it), so the TensorFlow trainer
refuses one by name; and every preset's mesh fits its model."""

import os

import pytest

from model.config import ModelConfig
from stages import config
from stages.trainer.config import DistributionConfig, TrainingConfig
from stages.trainer.jax_parallel import check_routing_fits_mesh
from stages.trainer.loop import Trainer
from tests.stages.trainer.conftest import MODEL, ROOT


@pytest.mark.parametrize("section", ["pretrain", "extend_32k"])
def test_the_tensorflow_trainer_refuses_a_device_mesh(tmp_path, section):
    cfg = TrainingConfig(distribution=DistributionConfig(data=2, expert=4))
    with pytest.raises(ValueError, match=rf"^{section}\.distribution is a data 2 x expert 4 device mesh, which only "
                                         r"the JAX trainer runs: run with KERAS_BACKEND=jax"):
        Trainer(ModelConfig(**MODEL), cfg, str(tmp_path), section=section)
    assert not os.listdir(tmp_path)   # refused before anything was built or written


def test_the_tensorflow_trainer_takes_the_one_device_mesh(tmp_path):
    for data in (1, -1):
        Trainer(ModelConfig(**MODEL), TrainingConfig(distribution=DistributionConfig(data=data)), str(tmp_path))


@pytest.mark.parametrize("preset, data, expert", [("tiny", 1, 1), ("small", -1, 1), ("v3-671b", -1, 64)])
def test_every_presets_mesh_fits_its_model(preset, data, expert):
    loaded = config.load(os.path.join(ROOT, "configs", f"{preset}.yaml"))
    mesh = loaded["pretrain"].distribution
    assert (mesh.data, mesh.expert) == (data, expert)
    check_routing_fits_mesh(loaded["model"].build(), mesh)
    if preset == "v3-671b":   # V3: EP64 over 8 nodes, ZeRO-1
        assert (mesh.zero, mesh.devices_per_node) == (1, 8)


def test_precision_is_checked_and_the_old_key_is_named():
    """`precision` takes float32, bf16 or fp8 (v3-671b pretrains in fp8, as the paper); the
    boolean it replaced is an unknown key whose error lists `precision`."""
    v3 = config.load(os.path.join(ROOT, "configs", "v3-671b.yaml"))
    assert (v3["pretrain"].precision, v3["sft"].precision) == ("fp8", "bf16")
    tiny = os.path.join(ROOT, "configs", "tiny.yaml")
    with pytest.raises(config.ConfigError, match=r"pretrain: precision must be one of float32, bf16, fp8, got 'fp16'"):
        config.load(tiny, ["pretrain.precision=fp16"])
    with pytest.raises(config.ConfigError, match=r"pretrain\.mixed_precision: unknown key .*precision"):
        config.load(tiny, ["pretrain.mixed_precision=true"])
