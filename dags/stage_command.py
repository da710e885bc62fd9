"""The one command every task runs: `seekforge run STAGE --config ... --set ...
--pipeline-run ... [--force]`, and the Airflow identity it passes on for lineage."""

import os
import re
import sys

# In the image `seekforge` is on PATH. On a local worker: the console script beside the
# worker's interpreter (`make venv` installs it), else the same CLI from this checkout.
CONTAINER_EXECUTABLE = ("seekforge",)
_VENV_SCRIPT = os.path.join(os.path.dirname(sys.executable), "seekforge")
LOCAL_EXECUTABLE = (_VENV_SCRIPT,) if os.path.exists(_VENV_SCRIPT) else (sys.executable, "-m", "stages.cli")
MLFLOW_RUN = re.compile(r"MLflow run ([0-9a-f]{32})")


def stage_argv(stage: str, config_path: str, overrides: list[str], pipeline_run: str, force: bool,
               executable: tuple[str, ...] = CONTAINER_EXECUTABLE) -> list[str]:
    argv = [*executable, "run", stage, "--config", config_path]
    for assignment in overrides:
        argv += ["--set", assignment]
    argv += ["--pipeline-run", pipeline_run]
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


def mlflow_run_id(log_text: str) -> str | None:
    """The runtime's last line names the MLflow run ("published ... (MLflow run ID)" or
    "cache hit: ... MLflow run ID")."""
    found = MLFLOW_RUN.findall(log_text)
    return found[-1] if found else None
