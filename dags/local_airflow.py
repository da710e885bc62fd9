"""`make up` / `make down`: Airflow (api-server, scheduler, triggerer, dag-processor;
LocalExecutor, SQLite, simple auth manager) and the MLflow UI on this checkout's tracking
store, all on 127.0.0.1 and nothing else (the workers' log servers are off: the api-server
reads the task logs from disk). `up` records the PIDs it started in
$AIRFLOW_HOME/services.json; `down` first fails the DAG runs still running through the
REST API, so their tasks stop their stages and report (the MLflow runs end KILLED, the DAG
runs show failed), then stops exactly the recorded processes, scheduler first.

    python -m dags.local_airflow up [--airflow-port 8080] [--mlflow-port 5000]
    python -m dags.local_airflow down

AIRFLOW_HOME is ./.airflow (git-ignored, mode 0700, its secrets 0600), the same home
`make demo` uses, so the demo's DAG runs show in the UI."""

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
from urllib.parse import quote

from dags.airflow_env import AIRFLOW_BIN, REPO_ROOT, airflow_env
from stages import lineage_links

DEFAULT_HOME = os.path.join(REPO_ROOT, ".airflow")
MLFLOW_BIN = os.path.join(os.path.dirname(sys.executable), "mlflow")
PASSWORDS = "simple_auth_manager_passwords.json.generated"
MLFLOW_START_PAGE = f"#/experiments?{lineage_links.TRAINING_VIEW}"


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
    """One JWT/API secret for all the Airflow processes (each would otherwise make its own)."""
    path = os.path.join(home, "secret_key")
    if not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    return open(path).read().strip()


def _private(home: str) -> None:
    """Only the owner reads the home and its secrets (Airflow writes the generated admin
    password file and airflow.cfg with the umask's 0644)."""
    os.chmod(home, 0o700)
    for name in (PASSWORDS, "secret_key", "airflow.cfg"):
        if os.path.exists(os.path.join(home, name)):
            os.chmod(os.path.join(home, name), 0o600)


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
    _private(home)
    # `down` stops them in this order: the scheduler first, while the api-server still
    # takes its tasks' last reports
    commands = {
        "scheduler": [AIRFLOW_BIN, "scheduler", "--skip-serve-logs"],
        "triggerer": [AIRFLOW_BIN, "triggerer", "--skip-serve-logs"],
        "dag-processor": [AIRFLOW_BIN, "dag-processor"],
        "api-server": [AIRFLOW_BIN, "api-server", "--host", "127.0.0.1", "--port", str(airflow_port)],
    }
    if mlflow_port:
        # one worker: the UI is for a few people (benchmarks/bench_mlflow_ui_memory.py)
        commands["mlflow-ui"] = [MLFLOW_BIN, "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                                 "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
    # MLflow's background job runner (and the workers it forks) serves GenAI features we do not use
    service_env = {"mlflow-ui": {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}}
    pids = []
    for name, argv in commands.items():
        log = open(os.path.join(home, "logs", f"{name}.log"), "ab")
        process = subprocess.Popen(argv, env=service_env.get(name, env), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
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
    _private(home)
    return {**urls, "password": admin_password(home), "pids": pids, "home": home}


def admin_password(home: str) -> str:
    with open(os.path.join(home, PASSWORDS)) as f:
        return json.load(f)["admin"]


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def down(home: str = DEFAULT_HOME, grace: float = 20, task_grace: float = 60) -> list[str]:
    """Fails the running DAG runs and waits up to `task_grace` s for their tasks to stop,
    then stops the processes `up` recorded (their process groups, in order); returns
    their names."""
    state_path = os.path.join(home, "services.json")
    if not os.path.exists(state_path):
        return []
    state = _load(state_path)
    alive = [p for p in state["pids"] if p["start"] and _start_time(p["pid"]) == p["start"]]
    if any(p["name"] == "api-server" for p in alive) and any(p["name"] == "scheduler" for p in alive):
        try:
            stop_running_dag_runs(state["airflow_url"], admin_password(home), task_grace)
        except (OSError, ValueError, KeyError) as e:   # the services are stopped regardless
            print(f"make down: could not fail the running DAG runs first ({e})", file=sys.stderr)
    for p in alive:
        _stop(p, grace)
    os.remove(state_path)
    return [p["name"] for p in alive]


def _stop(process: dict, grace: float) -> None:
    os.killpg(process["pid"], signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline and _start_time(process["pid"]) == process["start"]:
        try:   # reap our own child (when up and down run in one process, as in tests)
            os.waitpid(process["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.3)
    if _start_time(process["pid"]) == process["start"]:
        os.killpg(process["pid"], signal.SIGKILL)


def stop_running_dag_runs(airflow_url: str, password: str, timeout: float) -> list[str]:
    """Marks every running DAG run failed (Airflow then fails its running tasks, whose
    supervisors kill them: the operator's on_kill stops the stage, which ends its MLflow
    run KILLED) and waits until no task is running. Returns "dag_id/run_id"s."""
    api = rest_client(airflow_url, password)
    runs = api("GET", "/api/v2/dags/~/dagRuns?state=running&limit=100")["dag_runs"]
    for run in runs:
        api("PATCH", f"/api/v2/dags/{run['dag_id']}/dagRuns/{quote(run['dag_run_id'], safe='')}",
            {"state": "failed", "note": "stopped by `make down`"})
    deadline = time.time() + timeout
    while runs and time.time() < deadline:
        if not api("GET", "/api/v2/dags/~/dagRuns/~/taskInstances?state=running&limit=1")["total_entries"]:
            break
        time.sleep(1)
    return [f"{r['dag_id']}/{r['dag_run_id']}" for r in runs]


def rest_client(airflow_url: str, password: str, user: str = "admin"):
    """call(method, path, body=None) -> the JSON answer of Airflow's REST API, logged in."""
    def call(method: str, path: str, body=None, token: str | None = None):
        request = urllib.request.Request(airflow_url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    token = call("POST", "/auth/token", {"username": user, "password": password})["access_token"]
    return lambda method, path, body=None: call(method, path, body, token)


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
          f"MLflow   {info['mlflow_url']}/{MLFLOW_START_PAGE}   "
          f"(store: {services_env(DEFAULT_HOME, args.airflow_port)['MLFLOW_TRACKING_URI']})\n"
          f"logs     {os.path.relpath(os.path.join(DEFAULT_HOME, 'logs'), REPO_ROOT)}/   stop with `make down`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
