"""Sharded checkpoints (stages/trainer/sharded_checkpoint.py) on one process with 8
simulated CPU devices: a state of mixed shardings and dtypes (bfloat16 included) comes
back bit-equal, on its own sharding or another mesh and sharding; a killed save is
ignored and the next save of that step succeeds; a truncated or missing file is named;
a target that does not fit names the array; only the newest `keep` steps remain.

JAX runs in child processes (tests/stages/trainer/multihost_launch.py): the device count
is fixed when jax starts, and this session may be TensorFlow's. Here, only the file
checks run, which need no jax."""

import os
import shutil

import pytest

from stages.trainer import sharded_checkpoint
from stages.trainer.sharded_checkpoint import CheckpointError, latest_step
from tests.stages.trainer.multihost_launch import LaunchError, launch

PROGRAMS = "tests.stages.trainer.multihost_programs:"
SEED = 11
PATHS = ["[0][0]", "[0][1]", "[0][2]", "[1][0]", "[1][1]", "[2][0]", "[2][1]", "[2][2]"]


def run(function: str, **args):
    [result] = launch(PROGRAMS + function, args, processes=1, devices_per_process=8)
    return result


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Steps 1, 2 and 3 saved with keep=2, state on a 2 x 4 mesh."""
    directory = str(tmp_path_factory.mktemp("checkpoints"))
    assert run("save_state", directory=directory, steps=[1, 2, 3], data=2, expert=4, seed=SEED)["latest_step"] == 3
    return directory


@pytest.fixture
def copy(saved, tmp_path):
    """A copy of `saved` to damage."""
    return shutil.copytree(saved, str(tmp_path / "copy"))


def test_only_the_newest_keep_steps_remain(saved):
    assert sorted(os.listdir(saved)) == ["step_00000002", "step_00000003"]
    assert latest_step(saved) == 3
    files = os.listdir(os.path.join(saved, "step_00000003"))
    assert "manifest.json" in files and not [f for f in files if f.startswith("shards.")]


def test_a_directory_without_checkpoints_has_no_latest_step(tmp_path):
    assert latest_step(str(tmp_path / "absent")) is None
    os.makedirs(tmp_path / ".tmp-step_00000005")   # a killed first save
    assert latest_step(str(tmp_path)) is None
    with pytest.raises(ValueError, match="keep must be >= 1"):
        sharded_checkpoint.save(str(tmp_path), 1, [], keep=0)


def test_round_trip_of_mixed_shardings_and_bfloat16(saved):
    result = run("restore_state", directory=saved, step=3, data=2, expert=4, layout="saved", seed=SEED)
    assert result["values_equal"] == dict.fromkeys(PATHS, True)
    assert result["shardings_equal"]
    assert result["dtypes"] == ["float32", "bfloat16", "bfloat16", "float32", "int32",
                                "float32", "float32", "float32"]


def test_restore_onto_another_mesh_and_sharding(saved):
    # 4 x 2 instead of 2 x 4; replicated arrays now split, split ones replicated or split otherwise
    result = run("restore_state", directory=saved, step=2, data=4, expert=2, layout="other", seed=SEED)
    assert result["values_equal"] == dict.fromkeys(PATHS, True)
    assert result["shardings_equal"]
    assert result["needless_reads"] == []


def test_a_target_that_does_not_fit_names_the_array(saved):
    shape, dtype, tree, no_sharding, fits = run("restore_errors", directory=saved, step=3,
                                                changes=["shape", "dtype", "tree", "no_sharding", "none"])
    assert shape == "[0][1]: the checkpoint holds bfloat16[8, 8, 4], the target is bfloat16[8, 8, 5]"
    assert dtype == "[0][1]: the checkpoint holds bfloat16[8, 8, 4], the target is float32[8, 8, 4]"
    assert "step_00000003: the target's tree differs" in tree and "not in the target: ['[0][2]']" in tree
    assert no_sharding.startswith("[0][0]: the target has no sharding")
    assert fits == "restored without an error"


@pytest.mark.slow
def test_a_killed_save_is_ignored_and_the_next_save_of_its_step_succeeds(copy):
    with pytest.raises(LaunchError, match="exited with 9"):   # dies after writing 5 shard files
        run("save_state", directory=copy, steps=[4], data=2, expert=4, seed=SEED + 1, exit_after_writes=5)
    assert sorted(os.listdir(copy)) == [".tmp-step_00000004", "step_00000002", "step_00000003"]
    assert latest_step(copy) == 3
    assert run("save_state", directory=copy, steps=[4], data=2, expert=4, seed=SEED + 1)["latest_step"] == 4
    assert sorted(os.listdir(copy)) == ["step_00000003", "step_00000004"]   # the leftover cleared too
    result = run("restore_state", directory=copy, step=4, data=2, expert=4, layout="saved", seed=SEED + 1)
    assert result["values_equal"] == dict.fromkeys(PATHS, True)


def test_a_truncated_shard_file_is_named(copy):
    step = os.path.join(copy, "step_00000003")
    shard = os.path.join(step, "00001.0.2.bin")
    with open(shard, "r+b") as f:
        f.truncate(10)
    with pytest.raises(CheckpointError, match=rf"{shard}: 10 bytes, the manifest says 128 \(array \[0\]\[1\]\) "
                                              rf"\(delete {step} to resume from the previous checkpoint\)"):
        latest_step(copy)
    os.remove(shard)
    with pytest.raises(CheckpointError, match=rf"{shard}: missing"):
        latest_step(copy)


def test_a_missing_or_corrupt_manifest_is_named(copy):
    manifest = os.path.join(copy, "step_00000003", "manifest.json")
    with open(manifest, "w") as f:
        f.write('{"format": "seekforge.sharded_checkpoint/1", "step": 3, "arr')
    with pytest.raises(CheckpointError, match=rf"{manifest}: not valid JSON"):
        latest_step(copy)
    os.remove(manifest)
    with pytest.raises(CheckpointError, match=rf"{manifest}: missing, the checkpoint is incomplete"):
        latest_step(copy)
    # the older step is intact: deleting the broken one resumes from it
    shutil.rmtree(os.path.dirname(manifest))
    assert latest_step(copy) == 2


def test_a_corrupt_shard_of_the_right_size_is_named_on_restore(copy):
    shard = os.path.join(copy, "step_00000003", "00006.0.1.bin")
    with open(shard, "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert latest_step(copy) == 3   # sizes match: only the checksum tells
    [message] = run("restore_errors", directory=copy, step=3, changes=["none"])
    assert message == f"{shard}: corrupt (size or CRC32 differs from the manifest; array [2][1])"
