"""The entry point of the services in docker/compose.yaml: it puts the secrets, which
Compose mounts as files (/run/secrets/NAME, mode 0400), where the one command it then
runs reads them, so that no secret is in the compose file, in `docker inspect` or on a
command line.

    python /app/docker/entrypoint.py COMMAND [ARG...]

1. A variable NAME_FILE that names a file in /run/secrets/ (SEEKFORGE_SECRETS_DIR):
   NAME gets its content (a trailing newline dropped) and NAME_FILE goes. An
   unreadable or empty file, or NAME set as well, stops the start with a message naming
   both. (Other *_FILE variables, SSL_CERT_FILE say, are left alone.)
2. `${NAME}` in another variable's value, for a NAME read in 1, becomes that secret,
   percent-encoded where the value is a URL (the password in a database URI).
3. SEEKFORGE_ADMIN_PASSWORD (12 characters or more) becomes the password of Airflow's
   user `admin`: written, mode 0600, to the file Airflow's simple auth manager reads
   ([core] simple_auth_manager_passwords_file, else
   $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated), then dropped from the
   environment.
4. With MLFLOW_AUTH_CONFIG_PATH set, MLflow's basic-auth config is written there
   (mode 0600): its user database MLFLOW_AUTH_DATABASE_URI and the permission of users
   on what they did not create, MLFLOW_AUTH_DEFAULT_PERMISSION (default NO_PERMISSIONS).
   MLflow reads the admin's name and first password from MLFLOW_AUTH_ADMIN_USERNAME and
   MLFLOW_AUTH_ADMIN_PASSWORD itself."""

import json
import os
import re
import sys
import urllib.parse

MIN_PASSWORD_LENGTH = 12          # MLflow's rule for its users; the same for Airflow's admin
AIRFLOW_ADMIN = "admin"           # the admin of AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS
MLFLOW_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
SECRETS_DIR = "/run/secrets"      # where Compose (and Swarm) mount secrets


class EntrypointError(Exception):
    pass


def read_secret_files(env: dict[str, str]) -> list[str]:
    """Step 1: NAME from the secret file NAME_FILE names; the names read, in order."""
    secrets_dir = os.path.join(os.path.abspath(env.get("SEEKFORGE_SECRETS_DIR") or SECRETS_DIR), "")
    names = []
    for file_var in sorted(v for v in env if v.endswith("_FILE") and len(v) > len("_FILE")):
        name, path = file_var[:-len("_FILE")], env[file_var]
        if not os.path.abspath(path).startswith(secrets_dir):
            continue
        if name in env:
            raise EntrypointError(f"both {name} and {file_var} are set; set only {file_var} (the secret's file)")
        try:
            with open(path) as f:
                value = f.read()
        except OSError as e:
            raise EntrypointError(f"{file_var}: cannot read the secret file {path}: {e.strerror} "
                                  f"(is the secret mounted, owned by uid {os.getuid()}?)") from None
        value = value[:-1] if value.endswith("\n") else value
        if not value.strip():
            raise EntrypointError(f"{file_var}: the secret file {path} is empty")
        env[name] = value
        del env[file_var]
        names.append(name)
    return names


def substitute_secrets(env: dict[str, str], names: list[str]) -> None:
    """Step 2: ${NAME} of a secret, in any other value; percent-encoded inside a URL."""
    if not names:
        return
    pattern = re.compile(r"\$\{(" + "|".join(map(re.escape, names)) + r")\}")
    for var, value in env.items():
        if var in names or "${" not in value:
            continue
        in_url = "://" in value
        env[var] = pattern.sub(lambda m: urllib.parse.quote(env[m.group(1)], safe="") if in_url else env[m.group(1)],
                               value)


def write_private(path: str, text: str) -> None:
    """`text` to `path`, mode 0600 from the start, replacing any older file at once."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def airflow_passwords_file(env: dict[str, str]) -> str:
    """Where Airflow's SimpleAuthManager.get_generated_password_file() looks."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return configured
    home = env.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return os.path.join(home, "simple_auth_manager_passwords.json.generated")


def write_airflow_admin_password(env: dict[str, str]) -> str | None:
    """Step 3: the admin's password into the passwords file; other users' entries kept."""
    password = env.pop("SEEKFORGE_ADMIN_PASSWORD", None)
    if password is None:
        return None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise EntrypointError(f"SEEKFORGE_ADMIN_PASSWORD: {len(password)} characters; "
                              f"at least {MIN_PASSWORD_LENGTH} are needed")
    path = airflow_passwords_file(env)
    passwords = {}
    try:
        with open(path) as f:
            passwords = json.loads(f.read().strip() or "{}")
    except (OSError, ValueError):
        pass   # none yet, or unreadable: Airflow generates the other users' passwords again
    passwords[AIRFLOW_ADMIN] = password
    write_private(path, json.dumps(passwords) + "\n")
    return path


def write_mlflow_auth_config(env: dict[str, str]) -> str | None:
    """Step 4: MLflow's basic-auth ini (configparser: a literal % is written %%)."""
    path = env.get("MLFLOW_AUTH_CONFIG_PATH")
    if not path:
        return None
    database_uri = env.get("MLFLOW_AUTH_DATABASE_URI")
    if not database_uri:
        raise EntrypointError("MLFLOW_AUTH_CONFIG_PATH is set but MLFLOW_AUTH_DATABASE_URI "
                              "(the basic-auth user database) is not")
    permission = env.get("MLFLOW_AUTH_DEFAULT_PERMISSION") or "NO_PERMISSIONS"
    if permission not in MLFLOW_PERMISSIONS:
        raise EntrypointError(f"MLFLOW_AUTH_DEFAULT_PERMISSION: {permission!r} is not one of "
                              f"{', '.join(MLFLOW_PERMISSIONS)}")
    write_private(path, "\n".join([
        "[mlflow]",
        f"default_permission = {permission}",
        f"database_uri = {database_uri.replace('%', '%%')}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "",
    ]))
    return path


def prepare(env: dict[str, str]) -> dict[str, str]:
    """Steps 1-4 on a copy of `env`: the environment the command runs with."""
    env = dict(env)
    substitute_secrets(env, read_secret_files(env))
    write_airflow_admin_password(env)
    write_mlflow_auth_config(env)
    return env


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: entrypoint.py COMMAND [ARG...]")
    try:
        env = prepare(dict(os.environ))
    except EntrypointError as e:
        sys.exit(f"seekforge entrypoint: {e}")
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
