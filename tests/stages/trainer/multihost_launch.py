"""Runs one Python function in N fresh processes joined by jax.distributed on localhost,
each with its own simulated CPU devices (2 processes x 4 devices = one 8-device mesh),
and returns what each process's call returned:

    from tests.stages.trainer.multihost_launch import launch
    results = launch("tests.stages.trainer.multihost_programs:global_computation",
                     {"data": 2, "expert": 4}, processes=2, devices_per_process=4)
    # [process 0's return value, process 1's]

Each process sets the SEEKFORGE_* variables of stages.trainer.multihost (a free port for
the coordinator), calls multihost.initialize_from_environment(), then
MODULE.FUNCTION(**args); the return value must be JSON-serialisable. processes=1 skips
jax.distributed, so the same function run once on 8 devices is the single-process
reference. A process that exits non-zero, or a launch that outlives `timeout`, kills
every process and raises LaunchError with each one's output.

What launch() starts (reads the SEEKFORGE_* variables):
    python -m tests.stages.trainer.multihost_launch MODULE:FUNCTION ARGS_JSON RESULT_PATH
"""

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODULE = "tests.stages.trainer.multihost_launch"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


class LaunchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(process: int, processes: int, devices: int, port: int, extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEEKFORGE_") and k != "JOB_COMPLETION_INDEX"}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    env.update({
        "PYTHONPATH": os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p),
        "JAX_PLATFORMS": "cpu",
        "KERAS_BACKEND": "jax",   # a Keras program in a jax.distributed world; env= may change it
        "XLA_FLAGS": " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices}"]),
    })
    if processes > 1:
        env.update({"SEEKFORGE_NUM_PROCESSES": str(processes), "SEEKFORGE_PROCESS_ID": str(process),
                    "SEEKFORGE_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                    "SEEKFORGE_INITIALIZATION_TIMEOUT": "60"})
    env.update(extra or {})
    return env


def launch(target: str, args: dict | None = None, *, processes: int = 2, devices_per_process: int = 4,
           timeout: float = 180.0, env: dict | None = None) -> list:
    """target: "module:function"; returns the list of each process's return value."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="seekforge-launch-")
    results = [os.path.join(workdir, f"result.{i}.json") for i in range(processes)]
    logs = [open(os.path.join(workdir, f"output.{i}.log"), "w+") for i in range(processes)]
    running = []
    try:
        try:
            for i in range(processes):
                running.append(subprocess.Popen(
                    [sys.executable, "-m", MODULE, target, json.dumps(args or {}), results[i]],
                    cwd=ROOT, env=_environment(i, processes, devices_per_process, port, env),
                    stdout=logs[i], stderr=subprocess.STDOUT, start_new_session=True))
            failure = _wait(running, timeout)
        finally:
            for p in running:   # each in its own session: its group is exactly what it started
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:   # it exited meanwhile
                        pass
                    p.wait()
        if failure is not None:
            raise LaunchError(f"{target}: {failure}\n" + "\n".join(_tails(logs, running)))
        values = []
        for path in results:
            with open(path) as f:
                values.append(json.load(f))
        return values
    finally:
        for log in logs:
            log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(running: list[subprocess.Popen], timeout: float) -> str | None:
    """None when every process exits 0; else why not, as soon as one fails (the others
    would wait for it in a collective until their own timeouts)."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in running]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return f"process {failed[0]} exited with {codes[failed[0]]}"
        if all(code == 0 for code in codes):
            return None
        if time.monotonic() > deadline:
            return f"timed out after {timeout:.0f} s"
        time.sleep(0.05)


def _tails(logs, running) -> list[str]:
    tails = []
    for i, log in enumerate(logs):
        log.seek(0)
        code = running[i].returncode if i < len(running) else None
        tails.append(f"--- process {i} (exit {code}) ---\n{log.read()[-6000:]}")
    return tails


def main(argv: list[str]) -> None:
    target, args, result_path = argv[1], json.loads(argv[2]), argv[3]
    from stages.trainer import multihost
    multihost.initialize_from_environment()   # before the target touches jax
    module, _, function = target.partition(":")
    try:
        value = getattr(importlib.import_module(module), function)(**args)
        with open(result_path + ".tmp", "w") as f:
            json.dump(value, f)
        os.replace(result_path + ".tmp", result_path)
    except BaseException:
        # out now: jax.distributed's exit handler would wait for the other processes
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv)
