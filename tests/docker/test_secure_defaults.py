"""docker/compose.yaml and docker/k8s are secure as they are: ports on 127.0.0.1 unless
SEEKFORGE_BIND says otherwise, no secret with a default (Compose refuses to start
without one), secrets as files and never as variables, MLflow behind its basic-auth app
with few workers, no log server, the Airflow admin's password from
SEEKFORGE_ADMIN_PASSWORD; stage pods without root, privileges, capabilities or an API
token; least-privilege RBAC; stage pods reachable only from each other."""

import functools
import json
import os
import re
import subprocess

import pytest
import yaml

from tests.docker import compose_interpolation, k8s_schema

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(REPO, "docker", "compose.yaml")
SECRETS = {   # variable -> compose secret
    "POSTGRES_PASSWORD": "postgres_password",
    "AIRFLOW_JWT_SECRET": "airflow_jwt_secret",
    "AIRFLOW_FERNET_KEY": "airflow_fernet_key",
    "SEEKFORGE_ADMIN_PASSWORD": "airflow_admin_password",
    "MLFLOW_ADMIN_PASSWORD": "mlflow_admin_password",
    "MLFLOW_FLASK_SECRET_KEY": "mlflow_flask_secret_key",
}
ENV = {name: f"{name.lower()}-value-0123456789" for name in SECRETS}   # distinct, findable values
SEEKFORGE_SERVICES = ("airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-triggerer", "airflow-dag-processor",
                      "mlflow")


def read(*path):
    with open(os.path.join(REPO, *path)) as f:
        return f.read()


def rendered(env=ENV):
    return compose_interpolation.render(yaml.safe_load(read("docker", "compose.yaml")), env)


def host_ip(published: str) -> str:
    return published.rsplit(":", 2)[0]


def mode(value) -> int:
    return int(value, 8) if isinstance(value, str) else value   # 0o400 is a string to PyYAML (YAML 1.1)


# ---- compose: secrets ----

def test_every_secret_is_required_and_has_no_default():
    references = compose_interpolation.references(read("docker", "compose.yaml"))
    secret_like = {name for name, _ in references if re.search(r"PASSWORD|SECRET|_KEY|TOKEN", name)}
    assert secret_like == set(SECRETS)
    for name, operator in references:
        if name in SECRETS:
            assert operator == ":?", f"${{{name}{operator}...}}: a secret must be ${{{name}:?...}}"
    compose = yaml.safe_load(read("docker", "compose.yaml"))
    assert {s["environment"]: name for name, s in compose["secrets"].items()} == SECRETS
    assert "change-me" not in read("docker", "compose.yaml")


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_secret(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    for unset in (env, {**env, missing: ""}):
        with pytest.raises(compose_interpolation.MissingVariable,
                           match=f"{missing} is missing a value: run docker/make-secrets.sh"):
            rendered(unset)


def test_services_get_secrets_as_files_never_as_variables():
    compose = rendered()
    services = compose["services"]
    text = yaml.safe_dump(services)
    for name, value in ENV.items():
        assert value not in text, f"{name}'s value is in the services' config (docker inspect would show it)"
    for name, service in services.items():
        mounted = {s["source"]: s for s in service.get("secrets", [])}
        env = service.get("environment", {})
        secret_files = {var: path for var, path in env.items()
                        if var.endswith("_FILE") and path.startswith("/run/secrets/")}
        for var, path in secret_files.items():
            assert os.path.basename(path) in mounted, f"{name}: {var}={path} is not mounted"
        assert set(mounted) == {os.path.basename(p) for p in secret_files.values()}, f"{name}: a secret it never reads"
        for ref in re.findall(r"\$\{(\w+)\}", " ".join(map(str, env.values()))):
            assert f"{ref}_FILE" in env, f"{name}: ${{{ref}}} names no secret file of the service"
        owner = "999" if name == "postgres" else service["user"].split(":")[0]
        for secret in mounted.values():
            assert mode(secret["mode"]) == 0o400 and secret["uid"] == owner, (name, secret)
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in services["postgres"]["environment"]


# ---- compose: network exposure ----

def test_published_ports_are_on_loopback_unless_seekforge_bind():
    for env, ip in ((ENV, "127.0.0.1"), ({**ENV, "SEEKFORGE_BIND": "0.0.0.0"}, "0.0.0.0")):
        services = rendered(env)["services"]
        published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
        assert set(published) == {"airflow-api-server", "mlflow"}   # Postgres is not published
        for name, ports in published.items():
            assert all(host_ip(p) == ip for p in ports), (name, ports)


def test_scheduler_runs_no_log_server():
    services = rendered()["services"]
    assert "--skip-serve-logs" in services["airflow-scheduler"]["command"]
    # the api-server reads the task logs from the volume the scheduler writes them to
    assert "logs:/opt/airflow/logs" in services["airflow-scheduler"]["volumes"]
    assert "logs:/opt/airflow/logs:ro" in services["airflow-api-server"]["volumes"]
    assert not any("8793" in str(s.get("ports")) for s in services.values())


# ---- compose: MLflow and Airflow auth ----

def test_mlflow_is_behind_basic_auth_with_few_workers():
    services = rendered()["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    assert int(command[command.index("--workers") + 1]) <= 2
    configured = rendered({**ENV, "MLFLOW_WORKERS": "1"})["services"]["mlflow"]["command"]
    assert configured[configured.index("--workers") + 1] == "1"
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] and env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert env["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"] == "/run/secrets/mlflow_admin_password"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY_FILE"] == "/run/secrets/mlflow_flask_secret_key"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "CREATE DATABASE mlflow_auth" in read("docker", "postgres-init.sql")
    # the scheduler's tracking URI passes MLflow's host check, and it logs in
    scheduler = services["airflow-scheduler"]["environment"]
    host = scheduler["MLFLOW_TRACKING_URI"].split("://")[1].rstrip("/")
    assert host in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert scheduler["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert scheduler["MLFLOW_TRACKING_PASSWORD_FILE"] == env["MLFLOW_AUTH_ADMIN_PASSWORD_FILE"]
    # artifacts (cloudpickled models) on MLflow's own volume, not the stages' `work`
    assert [v.split(":")[0] for v in mlflow["volumes"]] == ["mlflow-artifacts"]
    assert command[command.index("--artifacts-destination") + 1] == "/mlartifacts"


def test_the_airflow_admin_password_is_the_documented_variable():
    services = rendered()["services"]
    api = services["airflow-api-server"]["environment"]
    assert api["SEEKFORGE_ADMIN_PASSWORD_FILE"] == "/run/secrets/airflow_admin_password"
    assert api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert api["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/")   # 0700 in the image
    # only the api-server gets it
    holders = [name for name, service in services.items()
               if any(x["source"] == "airflow_admin_password" for x in service.get("secrets", []))]
    assert holders == ["airflow-api-server"]


def test_seekforge_services_run_unprivileged_through_the_entrypoint():
    services = rendered()["services"]
    for name in SEEKFORGE_SERVICES:
        s = services[name]
        assert s["user"] == "1000:1000" and s["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in s["security_opt"], name
        assert s["entrypoint"] == ["python", "/app/docker/entrypoint.py"], name
    assert "no-new-privileges:true" in services["postgres"]["security_opt"]
    dockerfile = read("docker", "Dockerfile")
    assert "COPY docker/entrypoint.py docker/entrypoint.py" in dockerfile   # WORKDIR /app
    assert dockerfile.index("WORKDIR /app") < dockerfile.index("COPY docker/entrypoint.py")
    lock = read("requirements.lock")   # what the image installs (make venv)
    assert "\nasyncpg==" in lock and "\nflask-wtf==" in lock   # Airflow on Postgres; MLflow's basic-auth app
    assert "docker/.env" in read("docker", "Dockerfile.dockerignore").split()
    assert ".env" in read("docker", ".gitignore").split()


# ---- compose: the real CLI, where there is one ----

@functools.cache
def compose_cli() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif("not compose_cli()", reason="no `docker compose` here (`docker compose version` fails): "
                                                "the file is checked by tests/docker/compose_interpolation.py instead")
def test_docker_compose_config_refuses_without_secrets_and_binds_loopback(tmp_path):
    def config(env_file):
        env = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "SEEKFORGE_BIND"}
        return subprocess.run(["docker", "compose", "-f", COMPOSE, "--env-file", str(env_file), "config",
                               "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = config(empty)
    assert refused.returncode != 0
    assert re.search(r"required variable \w+ is missing a value: run docker/make-secrets.sh", refused.stderr)
    full = tmp_path / "full.env"
    full.write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
    accepted = config(full)
    assert accepted.returncode == 0, accepted.stderr
    services = json.loads(accepted.stdout)["services"]
    for name in ("airflow-api-server", "mlflow"):
        assert [p["host_ip"] for p in services[name]["ports"]] == ["127.0.0.1"]
    for value in ENV.values():
        assert value not in json.dumps(services)


# ---- kubernetes ----

def k8s_documents(name):
    return list(yaml.safe_load_all(read("docker", "k8s", name)))


def test_stage_pods_run_locked_down():
    pod = yaml.safe_load(read("docker", "k8s", "stage-pod.yaml"))
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0 and security["runAsGroup"] != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False,
                                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    # what a stage writes outside /work goes to emptyDirs
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    home = next(e["value"] for e in container["env"] if e["name"] == "HOME")
    for path in ("/tmp", home):
        assert "emptyDir" in volumes[mounts[path]], path
    # secrets from a Secret, never literal
    for e in container["env"]:
        if re.search(r"PASSWORD|SECRET|TOKEN|USERNAME", e["name"]):
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e


def test_rbac_is_least_privilege():
    documents = k8s_documents("airflow-rbac.yaml")
    kinds = [d["kind"] for d in documents]
    assert sorted(kinds) == ["Role", "RoleBinding", "ServiceAccount"]   # no ClusterRole: one namespace
    for d in documents:
        k8s_schema.validate(d, f"V1{d['kind']}")
    [role] = [d for d in documents if d["kind"] == "Role"]
    rules = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}
    assert not any("*" in group + resource or "*" in verbs for (group, resource), verbs in rules.items())
    assert set(rules) == {("", "pods"), ("", "pods/log"), ("", "events"), ("kubeflow.org", "tfjobs"),
                          ("kubeflow.org", "tfjobs/status")}   # no secrets, no pods/exec
    assert rules[("", "pods/log")] == {"get"}
    assert rules[("", "events")] <= {"get", "list", "watch"}
    assert rules[("kubeflow.org", "tfjobs/status")] == {"get"}
    assert "update" not in rules[("", "pods")] and "deletecollection" not in rules[("", "pods")]


def test_stage_pods_take_connections_only_from_each_other():
    [policy] = k8s_documents("stage-networkpolicy.yaml")
    k8s_schema.validate(policy, "V1NetworkPolicy")
    pod_labels = yaml.safe_load(read("docker", "k8s", "stage-pod.yaml"))["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress"]
    assert [peer for rule in spec["ingress"] for peer in rule["from"]] == [{"podSelector": spec["podSelector"]}]
    assert all("ports" not in rule for rule in spec["ingress"])   # the TFJob workers' ports are chosen by the operator
