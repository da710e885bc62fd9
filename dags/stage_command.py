"""The one command every task runs: `seekforge run STAGE --config ... --set ...
--pipeline-run ... --result-file ... [--force]`, the Airflow identity it passes on for
lineage, and the result file it writes (what the task reports: the MLflow run, the
published output, whether it was a cache hit)."""

import json
import os
import sys

# In the image `seekforge` is on PATH. On a local worker: the console script beside the
# worker's interpreter (`make venv` installs it), else the same CLI from this checkout.
CONTAINER_EXECUTABLE = ("seekforge",)
_VENV_SCRIPT = os.path.join(os.path.dirname(sys.executable), "seekforge")
LOCAL_EXECUTABLE = (_VENV_SCRIPT,) if os.path.exists(_VENV_SCRIPT) else (sys.executable, "-m", "stages.cli")


def stage_argv(stage: str, config_path: str, overrides: list[str], pipeline_run: str, force: bool,
               executable: tuple[str, ...] = CONTAINER_EXECUTABLE, result_file: str | None = None) -> list[str]:
    argv = [*executable, "run", stage, "--config", config_path]
    for assignment in overrides:
        argv += ["--set", assignment]
    argv += ["--pipeline-run", pipeline_run]
    if result_file:
        argv += ["--result-file", result_file]
    if force:
        argv.append("--force")
    return argv


def should_force(requested: bool, try_number: int) -> bool:
    """A retried or cleared task (try 2, 3, ...) reruns its stage even if cached."""
    return requested or try_number > 1


def airflow_env(dag_id: str, run_id: str, task_id: str, try_number: int) -> dict[str, str]:
    """The variables Airflow gives a BashOperator, set explicitly: containers do not
    inherit the worker's environment. The runtime turns them into MLflow tags."""
    return {"AIRFLOW_CTX_DAG_ID": dag_id, "AIRFLOW_CTX_DAG_RUN_ID": run_id,
            "AIRFLOW_CTX_TASK_ID": task_id, "AIRFLOW_CTX_TRY_NUMBER": str(try_number)}


# Airflow's own secrets, which a stage never needs: its database, the keys that sign API
# tokens and encrypt connections. A local stage starts from the worker's environment without them.
_AIRFLOW_SECRETS = ("SQL_ALCHEMY_CONN", "SECRET", "FERNET", "PASSWORD", "JWT")


def local_environment(worker_env: dict[str, str], task_env: dict[str, str]) -> dict[str, str]:
    """The environment of a stage run as a subprocess of the worker (mode local)."""
    kept = {k: v for k, v in worker_env.items()
            if not (k.startswith("AIRFLOW__") and any(word in k for word in _AIRFLOW_SECRETS))}
    return {**kept, **task_env, "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, worker_env.get("PYTHONPATH")]))}


RESULTS_DIR = os.path.join(".seekforge", "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workdir() -> str:
    """Where local stages run: ./artifacts, the default mlflow.db and the result files are
    relative to it."""
    return os.environ.get("SEEKFORGE_WORKDIR") or REPO_ROOT


def result_file(pipeline_run: str, stage: str, try_number: int) -> str:
    """Where a task's stage writes its result, relative to the working directory (the
    shared volume in containers and pods, so the same path works in every mode)."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in pipeline_run)
    return os.path.join(RESULTS_DIR, safe, f"{stage}-{try_number}.json")


def latest_results(workdir: str, pipeline_run: str) -> dict[str, dict]:
    """{stage: the result of its last try} of one pipeline run."""
    directory = os.path.dirname(os.path.join(workdir, result_file(pipeline_run, "x", 0)))
    found = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        stage, _, attempt = name.removesuffix(".json").rpartition("-")
        if attempt.isdigit() and int(attempt) >= found.get(stage, (-1, None))[0]:
            found[stage] = (int(attempt), read_result(os.path.join(directory, name)))
    return {stage: result for stage, (_, result) in found.items()}


def read_result(path: str) -> dict | None:
    """The result the stage wrote ({stage, uri, run_id, cache_key, digest, cached, ...}),
    None if there is none (a pod whose volume this worker does not mount)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
