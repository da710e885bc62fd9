"""Run untrusted code (a model's answer) with its tests in a separate Python process.

The child is a fresh interpreter (`-I -S`: no environment variables, user site or
site-packages) in an empty temporary directory, with CPU, memory, file-size and process
limits set by the child itself before it runs the candidate (setting them there, not in a
preexec_fn, stays safe when the caller has threads, as TensorFlow does). The caller waits
at most `timeout` seconds, then kills the child's whole process group.

A pass is reported only when the child writes a per-call random token after the tests
finished, so code that exits early with status 0 (sys.exit(0), os._exit(0)) fails.
This guards against accidents and exit-code reward hacks; it is not a security boundary
(no network or file-system isolation: run training in a container for that).
"""

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY_MB = 512
MAX_FILE_BYTES = 1 << 20
MAX_REPORT_BYTES = 4096

# Runs in the child. Reads {"token", "program", "cpu_seconds", "memory_bytes"} from stdin.
_CHILD = r"""
import json, os, sys
request = json.loads(sys.stdin.read())
try:
    import resource
    def limit(name, value):
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass
    limit("RLIMIT_CPU", request["cpu_seconds"])
    limit("RLIMIT_AS", request["memory_bytes"])
    limit("RLIMIT_FSIZE", %(max_file)d)
    limit("RLIMIT_CORE", 0)
    limit("RLIMIT_NPROC", 0)   # no forks (ignored for root)
except ImportError:
    pass
report = os.dup(1)
quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(quiet, 1)
os.dup2(quiet, 2)
token, program = request.pop("token"), request.pop("program")
try:
    exec(compile(program, "<candidate>", "exec"), {"__name__": "__candidate__"})
    outcome = "passed"
except BaseException as error:
    outcome = "failed: " + type(error).__name__ + ": " + str(error)[:200]
os.write(report, (token + " " + outcome).encode("utf-8", "replace"))
""" % {"max_file": MAX_FILE_BYTES}


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str          # "passed" | "failed: <error>" | "timed out" | "crashed (exit status N)"
    seconds: float


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT,
                memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """Execute `program` (source text) in a child process; passed iff it ran to its end
    without an exception within `timeout` seconds."""
    start = time.monotonic()
    token = secrets.token_hex(16)
    request = json.dumps({"token": token, "program": program, "cpu_seconds": int(timeout) + 1,
                          "memory_bytes": memory_mb << 20})   # json escapes lone surrogates: always encodable
    with tempfile.TemporaryDirectory(prefix="seekforge-sandbox-") as workdir:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=workdir, env={},
                                 start_new_session=True)
        try:
            out, _ = child.communicate(request.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            child.communicate()
            return SandboxResult(False, "timed out", time.monotonic() - start)
    return SandboxResult(*_outcome(out[:MAX_REPORT_BYTES], token, child.returncode), time.monotonic() - start)


def run_tests(code: str, tests: str, timeout: float = DEFAULT_TIMEOUT,
              memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """A candidate solution followed by its test snippet (plain asserts)."""
    return run_program(f"{code}\n\n{tests}\n", timeout, memory_mb)


def _outcome(report: bytes, token: str, returncode: int) -> tuple[bool, str]:
    text = report.decode("utf-8", "replace")
    if not text.startswith(token + " "):
        return False, f"crashed (exit status {returncode})"
    status = text[len(token) + 1:]
    return status == "passed", status


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the child and anything it started; called only before the child is reaped,
    so its process group id cannot have been reused."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
