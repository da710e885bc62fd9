"""SeekforgeStageOperator without a scheduler: the command it runs for a DAG run's
settings, --force on a retried or cleared try, settings inherited through the previous
phase's asset event, the asset event's MLflow run ids (from the stage's result file), and
the local subprocess's environment and failure message."""

import json
import os
import sys
import types

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dags import dag_factory, stage_command, stage_operator



def run_id_of(stage: str) -> str:
    import hashlib
    return hashlib.md5(stage.encode()).hexdigest()


def fake_context(task, try_number=1, params=None, triggering=None, xcoms=None):
    ti = types.SimpleNamespace(dag_id=task.dag_id, task_id=task.task_id, try_number=try_number,
                               xcom_pull=lambda task_ids: [xcoms[t] for t in task_ids])
    outlet_events = {asset: types.SimpleNamespace(extra=None) for asset in task.outlets}
    return {"params": {"preset": "tiny", "overrides": [], "mode": "local", "force": False, "pipeline_run": "",
                       **(params or {})},
            "dag_run": types.SimpleNamespace(run_id="manual__2026"), "ti": ti,
            "triggering_asset_events": triggering or {}, "outlet_events": outlet_events}


@pytest.fixture
def dag():
    return dag_factory.build_phase_dag("seekforge_data")


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """_run_local replaced by a stand-in that writes the result file the CLI would."""
    monkeypatch.setenv("SEEKFORGE_WORKDIR", str(tmp_path))
    recorded = []

    def run_local(self, argv, env):
        recorded.append((argv, env))
        path = tmp_path / argv[argv.index("--result-file") + 1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"stage": self.stage, "run_id": run_id_of(self.stage), "uri": f"/a/{self.stage}",
                                    "cached": False}))
    monkeypatch.setattr(stage_operator.SeekforgeStageOperator, "_run_local", run_local)
    return recorded


def test_first_try_runs_the_stage_for_the_dag_run(dag, calls):
    task = dag.get_task("dedup")
    result = task.execute(fake_context(task, params={"overrides": ["dedup.threshold=0.7", "orchestration.mode=docker"]}))
    argv, env = calls[0]
    assert argv[:len(stage_command.LOCAL_EXECUTABLE)] == list(stage_command.LOCAL_EXECUTABLE)
    assert argv[len(stage_command.LOCAL_EXECUTABLE):] == [
        "run", "dedup", "--config", dag_factory.run_settings.config_path("tiny"), "--set", "dedup.threshold=0.7",
        "--pipeline-run", "manual__2026", "--result-file", os.path.join(".seekforge", "results", "manual__2026",
                                                                       "dedup-1.json")]
    assert env == {"AIRFLOW_CTX_DAG_ID": "seekforge_data", "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026",
                   "AIRFLOW_CTX_TASK_ID": "dedup", "AIRFLOW_CTX_TRY_NUMBER": "1"}
    assert result["mlflow_run_id"] == run_id_of("dedup") and not result["forced"]
    assert result["output"] == "/a/dedup" and result["cached"] is False


def test_a_cleared_task_forces_its_stage(dag, calls):
    task = dag.get_task("filter")
    assert task.execute(fake_context(task, try_number=2))["forced"]
    assert calls[0][0][-1] == "--force" and calls[0][1]["AIRFLOW_CTX_TRY_NUMBER"] == "2"


def test_the_last_task_publishes_mlflow_runs_and_settings_on_the_asset(dag, calls):
    task = dag.get_task("tokenize")
    xcoms = {s: {"stage": s, "mlflow_run_id": f"id-{s}"} for s in ["ingest", "dedup", "filter", "mix", "tokenizer"]}
    context = fake_context(task, params={"overrides": ["mix.seed=3"]}, xcoms=xcoms)
    result = task.execute(context)
    [event] = context["outlet_events"].values()
    assert event.extra["pipeline_run"] == "manual__2026" and event.extra["overrides"] == ["mix.seed=3"]
    assert event.extra["mlflow_runs"] == [*xcoms.values(), {"stage": "tokenize", "mlflow_run_id": result["mlflow_run_id"]}]


def test_a_phase_scheduled_by_an_asset_continues_that_pipeline_run(dag, calls):
    task = dag.get_task("ingest")
    extra = {"preset": "tiny", "overrides": ["mix.seed=3"], "mode": "local", "pipeline_run": "manual__data"}
    task.execute(fake_context(task, triggering={"seekforge_data_done": [types.SimpleNamespace(extra=extra)]}))
    argv = calls[0][0]
    assert argv[argv.index("--pipeline-run") + 1] == "manual__data"
    assert "mix.seed=3" in argv


def test_local_subprocess_gets_the_airflow_identity_and_reports_the_error(dag, monkeypatch, tmp_path):
    monkeypatch.setenv("SEEKFORGE_WORKDIR", str(tmp_path))
    task = dag.get_task("ingest")
    env = {"AIRFLOW_CTX_DAG_ID": "d", "AIRFLOW_CTX_TASK_ID": "t"}
    script = f"import os; open({str(tmp_path / 'seen')!r}, 'w').write(os.environ['AIRFLOW_CTX_DAG_ID'] + ' ' + os.getcwd())"
    task._run_local([sys.executable, "-c", script], env)
    assert (tmp_path / "seen").read_text() == f"d {tmp_path}"
    failing = [sys.executable, "-c", "import sys; print('seekforge: error: ingest.sources: at least one source', "
                                     "file=sys.stderr); sys.exit(2)"]
    with pytest.raises(AirflowFailException, match="ingest.sources: at least one source"):   # bad input: no retry
        task._run_local(failing, env)
    with pytest.raises(AirflowException, match="exit 1"):
        task._run_local([sys.executable, "-c", "raise SystemExit(1)"], env)
