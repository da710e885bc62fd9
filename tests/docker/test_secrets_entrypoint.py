"""docker/make-secrets.sh writes the compose secrets at random to a 0600 file, keeping
what is there; docker/entrypoint.py puts the secret files where the services read them:
variables (a URL's password percent-encoded), the Airflow admin's password in the file
Airflow's own SimpleAuthManager checks logins against, MLflow's basic-auth config as
MLflow's own reader reads it. Files holding a secret are 0600."""

import importlib.util
import os
import stat
import subprocess
import sys

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_SECRETS = os.path.join(REPO, "docker", "make-secrets.sh")
ENTRYPOINT = os.path.join(REPO, "docker", "entrypoint.py")
with open(os.path.join(REPO, "docker", "compose.yaml")) as _f:   # what Compose requires
    SECRET_NAMES = tuple(s["environment"] for s in yaml.safe_load(_f)["secrets"].values())


def load_by_path(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


entrypoint = load_by_path("seekforge_entrypoint", ENTRYPOINT)   # `docker` is also the Docker SDK's package


def file_mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def read_env_file(path) -> dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if line.strip())


def make_secrets(path, **env):
    base = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    return subprocess.run(["sh", MAKE_SECRETS, str(path)], env={**base, **env}, capture_output=True, text=True,
                          timeout=30)


# ---- make-secrets.sh ----

def test_make_secrets_writes_every_secret_compose_requires_at_random_mode_0600(tmp_path):
    path = tmp_path / ".env"
    result = make_secrets(path)
    assert result.returncode == 0, result.stderr
    assert file_mode(path) == 0o600
    values = read_env_file(path)
    assert set(values) == set(SECRET_NAMES)
    assert all(len(v) >= 32 for v in values.values())
    assert len(set(values.values())) == len(values)
    Fernet(values["AIRFLOW_FERNET_KEY"])    # what Airflow's fernet_key must be
    for value in values.values():           # nothing secret on the terminal
        assert value not in result.stdout + result.stderr
    other = tmp_path / "other.env"
    make_secrets(other)
    assert not set(read_env_file(other).values()) & set(values.values())


def test_make_secrets_keeps_what_is_there_and_closes_the_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("POSTGRES_PASSWORD=kept-because-postgres-has-it\nMLFLOW_ADMIN_PASSWORD=\n")
    path.chmod(0o644)
    result = make_secrets(path, SEEKFORGE_ADMIN_PASSWORD="chosen by me, $not-expanded")
    assert result.returncode == 0 and "was open to others" in result.stderr
    assert file_mode(path) == 0o600
    values = read_env_file(path)
    assert values["POSTGRES_PASSWORD"] == "kept-because-postgres-has-it"
    assert values["MLFLOW_ADMIN_PASSWORD"]                       # an empty one is replaced
    assert values["SEEKFORGE_ADMIN_PASSWORD"] == "'chosen by me, $not-expanded'"   # literal to Compose
    again = make_secrets(path)
    assert "added: none" in again.stdout and read_env_file(path) == values


def test_make_secrets_refuses_a_short_admin_password(tmp_path):
    result = make_secrets(tmp_path / ".env", SEEKFORGE_ADMIN_PASSWORD="short")
    assert result.returncode == 2 and "SEEKFORGE_ADMIN_PASSWORD: 5 characters; at least 12" in result.stderr
    assert not (tmp_path / ".env").exists()


# ---- entrypoint.py ----

@pytest.fixture
def secrets_dir(tmp_path):
    directory = tmp_path / "secrets"
    directory.mkdir()

    def put(name, value):
        (directory / name).write_text(value)
        return str(directory / name)
    put.dir = str(directory)
    return put


def test_secret_files_become_variables_and_urls_get_them_encoded(secrets_dir):
    env = entrypoint.prepare({
        "SEEKFORGE_SECRETS_DIR": secrets_dir.dir,
        "POSTGRES_PASSWORD_FILE": secrets_dir("postgres_password", "p@ss/w:rd%\n"),
        "AIRFLOW__API_AUTH__JWT_SECRET_FILE": secrets_dir("airflow_jwt_secret", "jwt-secret"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            "postgresql+psycopg2://seekforge:${POSTGRES_PASSWORD}@postgres:5432/airflow",
        "NOT_A_URL": "${AIRFLOW__API_AUTH__JWT_SECRET} ${HOME}",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",     # not a secret: left alone
    })
    assert env["POSTGRES_PASSWORD"] == "p@ss/w:rd%" and env["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt-secret"
    assert "POSTGRES_PASSWORD_FILE" not in env and "AIRFLOW__API_AUTH__JWT_SECRET_FILE" not in env
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == \
        "postgresql+psycopg2://seekforge:p%40ss%2Fw%3Ard%25@postgres:5432/airflow"
    assert make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).password == "p@ss/w:rd%"
    assert env["NOT_A_URL"] == "jwt-secret ${HOME}"
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"


@pytest.mark.parametrize("case, message", [
    ("missing", "POSTGRES_PASSWORD_FILE: cannot read the secret file .*postgres_password"),
    ("empty", "POSTGRES_PASSWORD_FILE: the secret file .*postgres_password is empty"),
    ("both", "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set"),
])
def test_a_bad_secret_stops_the_start(secrets_dir, case, message):
    env = {"SEEKFORGE_SECRETS_DIR": secrets_dir.dir,
           "POSTGRES_PASSWORD_FILE": os.path.join(secrets_dir.dir, "postgres_password")}
    if case == "empty":
        secrets_dir("postgres_password", "\n")
    if case == "both":
        secrets_dir("postgres_password", "x")
        env["POSTGRES_PASSWORD"] = "y"
    with pytest.raises(entrypoint.EntrypointError, match=message):
        entrypoint.prepare(env)


def test_it_runs_the_command_with_the_secrets_or_exits_naming_the_problem(secrets_dir, tmp_path):
    show = [sys.executable, "-c", "import os; print(os.environ.get('POSTGRES_PASSWORD'), "
                                  "os.environ.get('POSTGRES_PASSWORD_FILE'))"]
    env = {"PATH": os.environ["PATH"], "SEEKFORGE_SECRETS_DIR": secrets_dir.dir,
           "POSTGRES_PASSWORD_FILE": secrets_dir("postgres_password", "from-the-file")}
    ran = subprocess.run([sys.executable, ENTRYPOINT, *show], env=env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0 and ran.stdout.split() == ["from-the-file", "None"]
    env["POSTGRES_PASSWORD_FILE"] = os.path.join(secrets_dir.dir, "absent")
    failed = subprocess.run([sys.executable, ENTRYPOINT, *show], env=env, capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("seekforge entrypoint: POSTGRES_PASSWORD_FILE: cannot read the secret file")


@pytest.fixture
def airflow_auth(monkeypatch, tmp_path):
    """Airflow's simple auth manager as docker/compose.yaml configures the api-server.
    (Airflow and MLflow are imported in the tests that use them: seconds, not paid by the rest.)"""
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER",
                       "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "auth" / "passwords.json"))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-jwt-secret-" + "0123456789abcdef" * 4)
    from airflow.api_fastapi import app
    yield tmp_path / "auth" / "passwords.json"
    app._AuthManagerState.instance = None


def test_the_admin_password_is_the_one_airflow_checks_logins_against(secrets_dir, airflow_auth):
    from fastapi import HTTPException

    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
    from airflow.api_fastapi.auth.managers.simple.services.login import SimpleAuthManagerLogin
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    password = "the-documented-admin-password"
    env = entrypoint.prepare({**os.environ, "SEEKFORGE_SECRETS_DIR": secrets_dir.dir,
                              "SEEKFORGE_ADMIN_PASSWORD_FILE": secrets_dir("airflow_admin_password", password)})
    assert "SEEKFORGE_ADMIN_PASSWORD" not in env   # in the file only, not in the api-server's environment
    assert SimpleAuthManager.get_generated_password_file() == str(airflow_auth)
    assert file_mode(airflow_auth) == 0o600
    init_auth_manager()      # the api-server's start: adds the other user's generated password, keeps ours
    passwords = SimpleAuthManager.get_passwords()
    assert passwords["admin"] == password and passwords["viewer"]
    assert SimpleAuthManagerLogin.create_token(LoginBody(username="admin", password=password))
    with pytest.raises(HTTPException) as denied:
        SimpleAuthManagerLogin.create_token(LoginBody(username="admin", password="admin"))
    assert denied.value.status_code == 401
    # a new password at the next start replaces the old one, the other user's stays
    viewer = passwords["viewer"]
    entrypoint.prepare({**os.environ, "SEEKFORGE_ADMIN_PASSWORD": "a-rotated-admin-password"})
    assert SimpleAuthManager.get_passwords() == {"admin": "a-rotated-admin-password", "viewer": viewer}
    assert file_mode(airflow_auth) == 0o600


def test_a_short_admin_password_stops_the_start(tmp_path):
    with pytest.raises(entrypoint.EntrypointError, match="SEEKFORGE_ADMIN_PASSWORD: 5 characters; at least 12"):
        entrypoint.prepare({"SEEKFORGE_ADMIN_PASSWORD": "short", "AIRFLOW_HOME": str(tmp_path)})
    assert not os.listdir(tmp_path)


def mlflow_auth_config_module(monkeypatch):
    """mlflow/server/auth/config.py, MLflow's reader of the basic-auth config, loaded with
    the one module it imports (mlflow/environment_variables.py, stdlib only): importing
    mlflow.server.auth takes seconds and Flask-WTF (the image installs mlflow[auth]; this
    environment need not)."""
    mlflow_dir = importlib.util.find_spec("mlflow").submodule_search_locations[0]
    if "mlflow" not in sys.modules:
        monkeypatch.setitem(sys.modules, "mlflow.environment_variables", load_by_path(
            "mlflow.environment_variables", os.path.join(mlflow_dir, "environment_variables.py")))
    return load_by_path("mlflow_basic_auth_config", os.path.join(mlflow_dir, "server", "auth", "config.py"))


def test_mlflow_reads_the_basic_auth_config_it_writes(secrets_dir, tmp_path, monkeypatch):
    read_auth_config = mlflow_auth_config_module(monkeypatch).read_auth_config
    config_path = tmp_path / "home" / "mlflow-basic-auth.ini"
    env = entrypoint.prepare({
        "SEEKFORGE_SECRETS_DIR": secrets_dir.dir,
        "POSTGRES_PASSWORD_FILE": secrets_dir("postgres_password", "100%-secret"),
        "MLFLOW_AUTH_CONFIG_PATH": str(config_path),
        "MLFLOW_AUTH_DATABASE_URI": "postgresql+psycopg2://seekforge:${POSTGRES_PASSWORD}@postgres:5432/mlflow_auth",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": secrets_dir("mlflow_admin_password", "mlflow-admin-password"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY_FILE": secrets_dir("mlflow_flask_secret_key", "flask-key"),
    })
    assert file_mode(config_path) == 0o600
    assert ":100%%25-secret@" in config_path.read_text()   # URL-encoded, then % written %% for configparser
    for name in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    config = read_auth_config()
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.database_uri == "postgresql+psycopg2://seekforge:100%25-secret@postgres:5432/mlflow_auth"
    assert (config.admin_username, config.admin_password) == ("admin", "mlflow-admin-password")
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "flask-key"
    with pytest.raises(entrypoint.EntrypointError, match="MLFLOW_AUTH_DEFAULT_PERMISSION: 'ALL'"):
        entrypoint.prepare({**env, "MLFLOW_AUTH_DEFAULT_PERMISSION": "ALL"})
