"""`make up` / `make down`: Airflow (api-server + scheduler + dag-processor, LocalExecutor,
SQLite, simple auth manager) and the MLflow UI on this checkout's tracking store, all on
127.0.0.1. `up` records the PIDs it started in $AIRFLOW_HOME/services.json; `down` stops
exactly those (process groups, checked against their recorded start times).

    python -m dags.local_airflow up [--airflow-port 8080] [--mlflow-port 5000]
    python -m dags.local_airflow down

AIRFLOW_HOME is ./.airflow (git-ignored), the same home `make demo` uses, so the demo's
DAG runs show in the UI."""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from dags.airflow_env import AIRFLOW_BIN, REPO_ROOT, airflow_env

DEFAULT_HOME = os.path.join(REPO_ROOT, ".airflow")
MLFLOW_BIN = os.path.join(os.path.dirname(sys.executable), "mlflow")
PASSWORDS = "simple_auth_manager_passwords.json.generated"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a recorded process from a later one with its PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _secret(home: str) -> str:
    """One JWT/API secret for all three Airflow processes (each would otherwise make its own)."""
    path = os.path.join(home, "secret_key")
    if not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    return open(path).read().strip()


def services_env(home: str, airflow_port: int, workdir: str = REPO_ROOT) -> dict[str, str]:
    base_url = f"http://127.0.0.1:{airflow_port}"
    secret = _secret(home)
    return airflow_env(home, workdir, {
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(airflow_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__API__SECRET_KEY": secret,
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    })


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(1)


def up(home: str = DEFAULT_HOME, airflow_port: int = 8080, mlflow_port: int | None = 5000,
       workdir: str = REPO_ROOT, timeout: float = 180) -> dict:
    """Starts the services; returns {"airflow_url", "mlflow_url", "password", "pids"}."""
    state_path = os.path.join(home, "services.json")
    if os.path.exists(state_path) and any(_start_time(p["pid"]) == p["start"] for p in _load(state_path)["pids"]):
        raise RuntimeError(f"services from {state_path} are still running: `make down` first")
    ports = [airflow_port] + ([mlflow_port] if mlflow_port else [])
    busy = [p for p in ports if not _port_free(p)]
    if busy:
        raise RuntimeError(f"port {busy[0]} is in use on 127.0.0.1")
    os.makedirs(os.path.join(home, "logs"), exist_ok=True)
    env = services_env(home, airflow_port, workdir)
    subprocess.check_call([AIRFLOW_BIN, "db", "migrate"], env=env, cwd=workdir,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commands = {
        "api-server": [AIRFLOW_BIN, "api-server", "--host", "127.0.0.1", "--port", str(airflow_port)],
        "scheduler": [AIRFLOW_BIN, "scheduler"],
        "dag-processor": [AIRFLOW_BIN, "dag-processor"],
    }
    if mlflow_port:
        commands["mlflow-ui"] = [MLFLOW_BIN, "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                                 "--host", "127.0.0.1", "--port", str(mlflow_port)]
    pids = []
    for name, argv in commands.items():
        log = open(os.path.join(home, "logs", f"{name}.log"), "ab")
        process = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)   # its own group: down stops its children too
        pids.append({"name": name, "pid": process.pid, "start": _start_time(process.pid)})
    urls = {"airflow_url": f"http://127.0.0.1:{airflow_port}",
            "mlflow_url": f"http://127.0.0.1:{mlflow_port}" if mlflow_port else None}
    with open(state_path, "w") as f:
        json.dump({"pids": pids, **urls}, f, indent=2)
    try:
        _wait_healthy(f"{urls['airflow_url']}/api/v2/monitor/health", timeout)
        if mlflow_port:
            _wait_healthy(f"{urls['mlflow_url']}/health", timeout)
    except TimeoutError:
        down(home)
        raise
    with open(os.path.join(home, PASSWORDS)) as f:
        password = json.load(f)["admin"]
    return {**urls, "password": password, "pids": pids, "home": home}


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def down(home: str = DEFAULT_HOME, grace: float = 20) -> list[str]:
    """Stops the processes `up` recorded (and their process groups); returns their names."""
    state_path = os.path.join(home, "services.json")
    if not os.path.exists(state_path):
        return []
    alive = [p for p in _load(state_path)["pids"] if p["start"] and _start_time(p["pid"]) == p["start"]]
    for p in alive:
        os.killpg(p["pid"], signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and any(_start_time(p["pid"]) == p["start"] for p in alive):
        for p in alive:   # reap our own children (when up and down run in one process, as in tests)
            try:
                os.waitpid(p["pid"], os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.5)
    for p in alive:
        if _start_time(p["pid"]) == p["start"]:
            os.killpg(p["pid"], signal.SIGKILL)
    os.remove(state_path)
    return [p["name"] for p in alive]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up")
    start.add_argument("--airflow-port", type=int, default=8080)
    start.add_argument("--mlflow-port", type=int, default=5000)
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if args.command == "down":
        stopped = down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing recorded as running")
        return 0
    try:
        info = up(airflow_port=args.airflow_port, mlflow_port=args.mlflow_port)
    except (RuntimeError, TimeoutError) as e:
        print(f"make up: {e}", file=sys.stderr)
        return 1
    print(f"Airflow  {info['airflow_url']}   user admin, password {info['password']}\n"
          f"MLflow   {info['mlflow_url']}   (store: {services_env(DEFAULT_HOME, args.airflow_port)['MLFLOW_TRACKING_URI']})\n"
          f"logs     {os.path.relpath(os.path.join(DEFAULT_HOME, 'logs'), REPO_ROOT)}/   stop with `make down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
