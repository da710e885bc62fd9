"""The image installs the project the way the Makefile does, copies every package,
and the compose file describes the team deployment (Airflow's three services on
LocalExecutor and an MLflow server, both on Postgres)."""

import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(*path):
    with open(os.path.join(REPO, *path)) as f:
        return f.read()


def test_dockerfile_installs_with_the_makefiles_venv_recipe():
    dockerfile = read("docker", "Dockerfile")
    runs = re.findall(r"^RUN (.+?)(?<!\\)$", dockerfile, re.M | re.S)
    assert any(r.startswith("make venv") for r in runs)
    # ... and that recipe is the README's install: venv, uv, the lock, the project, torch
    recipe = read("Makefile").split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    for step in ("-m venv", "pip install --quiet --upgrade pip uv", "-r requirements.lock",
                 "--no-deps -e .", '"torch==2.13.0"'):
        assert step in recipe, step
    copied = re.findall(r"^COPY (\S+)", dockerfile, re.M)
    for needed in ("pyproject.toml", "model/", "stages/", "beam_jobs/", "dags/", "configs/"):
        assert needed in copied, needed
    assert dockerfile.index("COPY configs/") < dockerfile.index("RUN make venv")   # -e . needs the sources
    assert "WORKDIR /work" in dockerfile        # stages run on the shared volume (dags/container_specs.py)


def test_compose_file_runs_airflow_and_mlflow_on_postgres():
    compose = yaml.safe_load(read("docker", "compose.yaml"))
    services = compose["services"]
    assert {"postgres", "airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-triggerer",
            "airflow-dag-processor", "mlflow"} <= set(services)
    commands = {name: s["command"][:2] for name, s in services.items() if "command" in s}
    assert commands["airflow-api-server"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-triggerer"] == ["airflow", "triggerer"]   # else the UI's health badge is red
    assert commands["mlflow"] == ["mlflow", "server"]
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-triggerer", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # the store's URI in the environment (its password put in by docker/entrypoint.py), not on the command line
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert not any("postgres:5432" in a for a in services["mlflow"]["command"])
    assert "CREATE DATABASE mlflow OWNER" in read("docker", "postgres-init.sql")


def test_kubernetes_templates_parse():
    for name in ("stage-pod.yaml", "artifacts-pvc.yaml", "airflow-rbac.yaml", "stage-networkpolicy.yaml"):
        documents = list(yaml.safe_load_all(read("docker", "k8s", name)))
        assert documents and all(d["apiVersion"] and d["kind"] for d in documents)
    from tests.docker import k8s_schema
    k8s_schema.validate(yaml.safe_load(read("docker", "k8s", "stage-pod.yaml")), "V1Pod")
    k8s_schema.validate(yaml.safe_load(read("docker", "k8s", "artifacts-pvc.yaml")), "V1PersistentVolumeClaim")
