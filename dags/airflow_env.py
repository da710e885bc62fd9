"""The environment for Airflow processes started from this checkout (`make demo`,
`make up`, the end-to-end test): AIRFLOW_HOME inside the repository (never ~/airflow),
our DAG folder, no examples, and stages running in the repository with the MLflow store
at ./mlflow.db unless MLFLOW_TRACKING_URI says otherwise."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AIRFLOW_BIN = os.path.join(os.path.dirname(sys.executable), "airflow")


def airflow_env(home: str, workdir: str = REPO_ROOT, extra: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO_ROOT, "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",               # 2 cores: one stage at a time is plenty
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "120",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        # INFO: the operator streams each stage's output into its task log at INFO
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # the later phases start from the previous phase's asset: paused, its event would queue silently
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "SEEKFORGE_WORKDIR": workdir,
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.join(workdir, 'mlflow.db')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    env.update(extra or {})
    return env
