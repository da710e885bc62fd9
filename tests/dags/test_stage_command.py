"""The command a task runs, when it forces, and the orchestration section's merging."""

import pytest

from dags import run_settings, stage_command
from stages import orchestration
from stages.config import ConfigError


def test_stage_argv_is_seekforge_run_with_overrides_pipeline_run_and_force():
    argv = stage_command.stage_argv("dedup", "/app/configs/tiny.yaml", ["dedup.threshold=0.7", "mix.seed=1"],
                                    "manual__1", force=True)
    assert argv == ["seekforge", "run", "dedup", "--config", "/app/configs/tiny.yaml", "--set", "dedup.threshold=0.7",
                    "--set", "mix.seed=1", "--pipeline-run", "manual__1", "--force"]
    assert "--force" not in stage_command.stage_argv("dedup", "c.yaml", [], "r", force=False)


def test_a_retried_or_cleared_task_forces_its_stage():
    assert not stage_command.should_force(False, try_number=1)
    assert stage_command.should_force(False, try_number=2)
    assert stage_command.should_force(True, try_number=1)


def test_the_result_of_a_stage_is_read_from_its_result_file(tmp_path):
    import json
    first = stage_command.result_file("demo-1", "dedup", 1)
    assert first == ".seekforge/results/demo-1/dedup-1.json"
    for attempt, cached in ((1, False), (2, True)):
        path = tmp_path / stage_command.result_file("demo-1", "dedup", attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": "dedup", "run_id": f"r{attempt}", "cached": cached}))
    assert stage_command.latest_results(str(tmp_path), "demo-1") == {"dedup": {"stage": "dedup", "run_id": "r2",
                                                                                 "cached": True}}
    assert stage_command.read_result(str(tmp_path / "absent.json")) is None
    assert stage_command.latest_results(str(tmp_path), "no-such-run") == {}


def test_orchestration_overrides_stay_with_the_dags():
    settings = run_settings.RunSettings("tiny", ("orchestration.mode=docker", "dedup.threshold=0.7"), "local", "r", False)
    assert settings.stage_overrides == ["dedup.threshold=0.7"]
    assert settings.orchestration().mode == "docker"


def test_stage_entries_fall_back_to_default_field_by_field():
    orch = orchestration.from_dict(orchestration.OrchestrationConfig, {
        "default": {"retries": 2, "resources": {"cpu": "4"}},
        "stages": {"pretrain": {"timeout_minutes": 600, "workers": 4, "resources": {"gpu": 8}}},
    }, "orchestration")
    pretrain = orch.for_stage("pretrain")
    assert (pretrain.retries, pretrain.timeout_minutes, pretrain.workers) == (2, 600, 4)
    assert (pretrain.resources.cpu, pretrain.resources.gpu, pretrain.resources.memory) == ("4", 8, "4Gi")
    assert orch.for_stage("dedup").resources.gpu == 0


def test_bad_orchestration_values_name_the_key():
    with pytest.raises(ConfigError, match="orchestration.mode"):
        orchestration.from_dict(orchestration.OrchestrationConfig, {"mode": "ssh"}, "orchestration")
    with pytest.raises(ConfigError, match=r"orchestration.stages.pretrain.workers"):
        orchestration.from_dict(orchestration.OrchestrationConfig, {"stages": {"pretrain": {"workers": 0}}},
                                "orchestration")


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="preset 'huge'"):
        run_settings.config_path("huge")


def test_a_local_stage_gets_the_workers_environment_without_airflows_secrets():
    worker = {"PATH": "/usr/bin", "MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_PASSWORD": "m",
              "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u:p@db/airflow",
              "AIRFLOW__API_AUTH__JWT_SECRET": "s", "AIRFLOW__API__SECRET_KEY": "k", "AIRFLOW__CORE__FERNET_KEY": "f",
              "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "PYTHONPATH": "/extra"}
    env = stage_command.local_environment(worker, {"AIRFLOW_CTX_DAG_ID": "seekforge_data"})
    assert env["PATH"] == "/usr/bin" and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "m"                  # the stage's own MLflow login stays
    assert env["AIRFLOW_CTX_DAG_ID"] == "seekforge_data"
    assert not [k for k in env if "SECRET" in k or "FERNET" in k or "SQL_ALCHEMY" in k]
    assert env["PYTHONPATH"] == f"{stage_command.REPO_ROOT}:/extra"
