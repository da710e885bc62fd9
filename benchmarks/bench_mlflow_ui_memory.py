"""Memory of the MLflow UI `make up` starts: MLflow's defaults (4 workers, its background
job runner with its huey workers) against ours (1 worker, no job runner: dags/local_airflow.py),
side by side on the same tracking store, as the resident memory (RSS, and USS: pages no
other process shares) summed over each server's process tree once /health answers.

    .venv/bin/python benchmarks/bench_mlflow_ui_memory.py
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(workers: int, jobs: bool, store: str, settle: float) -> tuple[float, float, int]:
    """(RSS MiB, USS MiB, processes) of `mlflow ui --workers N` after it answers."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(jobs).lower()}
    server = subprocess.Popen([MLFLOW, "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port),
                               "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env)
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError("the MLflow UI did not answer in 300 s")
                time.sleep(1)
        time.sleep(settle)   # every worker up and idle
        root = psutil.Process(server.pid)
        tree = [root, *root.children(recursive=True)]
        infos = [p.memory_full_info() for p in tree]
        return sum(i.rss for i in infos) / 2**20, sum(i.uss for i in infos) / 2**20, len(tree)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


CONFIGURATIONS = {"MLflow's defaults (4 workers, job runner)": (4, True), "make up (1 worker, no jobs)": (1, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after /health answers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        results = {name: measure(*config, store, args.settle) for name, config in CONFIGURATIONS.items()}
    for name, (rss, uss, n) in results.items():
        print(f"{name:45s} RSS {rss:6.0f} MiB  USS {uss:6.0f} MiB  ({n} processes)")
    (base_rss, base_uss, _), (rss, uss, _) = results.values()
    print(f"ratio defaults / make up: RSS {base_rss / rss:.2f}x, USS {base_uss / uss:.2f}x")


if __name__ == "__main__":
    main()
