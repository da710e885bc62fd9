"""Multi-host JAX on one machine: 2 processes x 4 CPU devices joined by jax.distributed
(stages/trainer/multihost.py, gloo collectives) compute what 1 process x 8 devices
computes, and write sharded checkpoints that the other layout restores. The settings
come from the environment, and a missing or malformed one is named."""

import os
import tempfile

import numpy as np
import pytest

from stages.trainer import multihost, sharded_checkpoint
from stages.trainer.multihost import MultihostConfig, MultihostError, from_environment
from tests.stages.trainer.multihost_launch import LaunchError, launch

PROGRAMS = "tests.stages.trainer.multihost_programs:"
SEED = 23
PATHS = ["[0][0]", "[0][1]", "[0][2]", "[1][0]", "[1][1]", "[2][0]", "[2][1]", "[2][2]"]
TWO = dict(processes=2, devices_per_process=4)
ONE = dict(processes=1, devices_per_process=8)


# ---- the environment ----

def test_one_process_needs_nothing_and_initializes_nothing():
    assert from_environment({}) == MultihostConfig()
    assert multihost.initialize(MultihostConfig()) is False


def test_settings_from_our_variables_or_an_indexed_job():
    ours = {"SEEKFORGE_NUM_PROCESSES": "4", "SEEKFORGE_PROCESS_ID": "3",
            "SEEKFORGE_COORDINATOR_ADDRESS": "10.0.0.7:8476", "SEEKFORGE_INITIALIZATION_TIMEOUT": "60"}
    assert from_environment(ours) == MultihostConfig(4, 3, "10.0.0.7:8476", 60)
    # Kubernetes sets JOB_COMPLETION_INDEX in each pod of an Indexed Job (a JobSet's too)
    jobset = {"SEEKFORGE_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1",
              "SEEKFORGE_COORDINATOR_ADDRESS": "seekforge-pretrain-1-ab12-workers-0-0.seekforge-pretrain-1-ab12:8476"}
    assert from_environment(jobset).process_id == 1
    assert from_environment({**jobset, "SEEKFORGE_PROCESS_ID": "0"}).process_id == 0   # ours first
    assert from_environment({**jobset, "SEEKFORGE_COORDINATOR_ADDRESS": "[fd00::1]:8476"}).num_processes == 2


@pytest.mark.parametrize("env, message", [
    ({"SEEKFORGE_NUM_PROCESSES": "two"}, "SEEKFORGE_NUM_PROCESSES: expected an integer, got 'two'"),
    ({"SEEKFORGE_NUM_PROCESSES": "0"}, "SEEKFORGE_NUM_PROCESSES: must be >= 1, got 0"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_PROCESS_ID": "0"},
     "SEEKFORGE_COORDINATOR_ADDRESS is not set"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_COORDINATOR_ADDRESS": "h:1"},
     "neither SEEKFORGE_PROCESS_ID nor JOB_COMPLETION_INDEX is set"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "x", "SEEKFORGE_COORDINATOR_ADDRESS": "h:1"},
     "JOB_COMPLETION_INDEX: expected an integer, got 'x'"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_PROCESS_ID": "2", "SEEKFORGE_COORDINATOR_ADDRESS": "h:1"},
     r"SEEKFORGE_PROCESS_ID: must be in \[0, 2\), got 2"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_PROCESS_ID": "0", "SEEKFORGE_COORDINATOR_ADDRESS": "pod-0.svc"},
     "SEEKFORGE_COORDINATOR_ADDRESS: expected host:port, got 'pod-0.svc'"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_PROCESS_ID": "0", "SEEKFORGE_COORDINATOR_ADDRESS": "h:70000"},
     "SEEKFORGE_COORDINATOR_ADDRESS: expected host:port, got 'h:70000'"),
    ({"SEEKFORGE_COORDINATOR_ADDRESS": "h:1"}, "SEEKFORGE_COORDINATOR_ADDRESS is set but SEEKFORGE_NUM_PROCESSES"),
    ({"SEEKFORGE_NUM_PROCESSES": "2", "SEEKFORGE_PROCESS_ID": "0", "SEEKFORGE_COORDINATOR_ADDRESS": "h:1",
      "SEEKFORGE_INITIALIZATION_TIMEOUT": "0"}, "SEEKFORGE_INITIALIZATION_TIMEOUT: must be >= 1"),
])
def test_a_missing_or_malformed_setting_is_named(env, message):
    with pytest.raises(MultihostError, match=message):
        from_environment(env)


# ---- 2 processes x 4 devices against 1 process x 8 ----

@pytest.mark.slow
def test_two_processes_compute_what_one_process_computes():
    [single] = launch(PROGRAMS + "global_computation", {"data": 2, "expert": 4}, **ONE)
    first, second = launch(PROGRAMS + "global_computation", {"data": 2, "expert": 4}, **TWO)
    assert (single["process_count"], single["device_count"]) == (1, 8)
    assert (first["process_count"], first["device_count"]) == (2, 8)
    for result in (first, second):   # every process sees the whole result
        np.testing.assert_array_equal(result["mixed"], single["mixed"])   # all-to-all and sum: exact
        np.testing.assert_allclose(result["per_expert"], single["per_expert"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(result["loss"], single["loss"], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("saver, restorer", [(TWO, ONE), (ONE, TWO)], ids=["2->1", "1->2"])
def test_a_checkpoint_saved_by_one_layout_restores_on_the_other(saver, restorer):
    with tempfile.TemporaryDirectory() as directory:
        saved = launch(PROGRAMS + "save_state",
                       {"directory": directory, "steps": [7], "data": 2, "expert": 4, "seed": SEED}, **saver)
        assert [r["latest_step"] for r in saved] == [7] * saver["processes"]
        total = sum(len(array["shards"]) for array in sharded_checkpoint.read_manifest(directory, 7)["arrays"])
        for layout, mesh in (("saved", (2, 4)), ("other", (4, 2))):
            results = launch(PROGRAMS + "restore_state", {"directory": directory, "step": 7, "data": mesh[0],
                                                          "expert": mesh[1], "layout": layout, "seed": SEED},
                             **restorer)
            for result in results:
                assert result["values_equal"] == dict.fromkeys(PATHS, True), (layout, result["process"])
                assert result["shardings_equal"]
                assert result["needless_reads"] == []   # only shards overlapping its devices' slices
                # with 2 processes, some arrays are split between them: each reads its part only
                assert len(result["files_read"]) < total or restorer["processes"] == 1


# ---- the launcher ----

@pytest.mark.slow
def test_a_failing_process_stops_every_process():
    with pytest.raises(LaunchError, match="process 1 exited with 1") as failure:
        launch(PROGRAMS + "fail_in_process", {"process": 1}, timeout=120, **TWO)
    assert "process 1 fails on purpose" in str(failure.value)


def test_a_launch_that_outlives_its_timeout_is_killed():
    with pytest.raises(LaunchError, match="timed out after 3 s"):
        launch(PROGRAMS + "sleep", {"seconds": 600}, timeout=3, processes=1, devices_per_process=1)
    assert os.environ.get("SEEKFORGE_NUM_PROCESSES") is None   # the launcher leaves this process alone
