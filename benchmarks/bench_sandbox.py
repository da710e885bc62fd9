"""Cost of one GRPO code check (stages.posttrain.sandbox.run_tests), side by side on the
same generated problems: the hardened sandbox (namespaces; and the plain fallback) vs
the baseline, the previous sandbox (one fresh `python -I -S` per check that runs the code
and its tests together and reports a pass itself; embedded below, since it is gone).

    python benchmarks/bench_sandbox.py [--problems 20] [--rounds 3]
"""

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stages.posttrain import sandbox, tasks  # noqa: E402
from stages.sandbox import isolation, probe  # noqa: E402

# --- the baseline: the previous stages/posttrain/sandbox.py, condensed -----------------
_OLD_CHILD = r"""
import json, os, sys, resource
request = json.loads(sys.stdin.read())
for name, value in (("RLIMIT_CPU", request["cpu_seconds"]), ("RLIMIT_AS", request["memory_bytes"]),
                    ("RLIMIT_FSIZE", 1 << 20), ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", 0)):
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError):
        pass
report = os.dup(1)
quiet = os.open(os.devnull, os.O_WRONLY)
os.dup2(quiet, 1)
os.dup2(quiet, 2)
try:
    exec(compile(request["program"], "<candidate>", "exec"), {"__name__": "__candidate__"})
    outcome = "passed"
except BaseException as error:
    outcome = "failed: " + type(error).__name__
os.write(report, (request["token"] + " " + outcome).encode())
"""


def old_run_tests(code: str, tests: str, timeout: float = 3.0, memory_mb: int = 512) -> bool:
    token = secrets.token_hex(16)
    request = json.dumps({"token": token, "program": f"{code}\n\n{tests}\n", "cpu_seconds": int(timeout) + 1,
                          "memory_bytes": memory_mb << 20})
    with tempfile.TemporaryDirectory(prefix="seekforge-sandbox-") as workdir:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _OLD_CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=workdir, env={},
                                 start_new_session=True)
        try:
            out, _ = child.communicate(request.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return False
    return out.decode().startswith(token + " passed")
# ----------------------------------------------------------------------------------------


def new_run_tests(mode: str):
    def run(code: str, tests: str, entry_point: str) -> bool:
        probe._mode = mode
        return sandbox.run_tests(code, tests, entry_point=entry_point).passed
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    problems, _ = tasks.generate_problems(seed=0, count=args.problems, generators=["code"])
    detected = probe.isolation_mode()
    runners = {"baseline: previous sandbox": lambda code, tests, entry_point: old_run_tests(code, tests)}
    for mode in ((isolation.NAMESPACES, isolation.PLAIN) if detected == isolation.NAMESPACES else (isolation.PLAIN,)):
        runners[f"hardened, {mode}"] = new_run_tests(mode)
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for problem in problems:             # interleaved, so load on the machine hits all alike
            for name, run in runners.items():
                start = time.perf_counter()
                assert run(problem["answer"], problem["tests"], problem["entry_point"]), (name, problem["id"])
                times[name].append(time.perf_counter() - start)
    probe._mode = detected
    baseline = statistics.median(times["baseline: previous sandbox"])
    print(f"{len(problems)} generated code problems x {args.rounds} rounds, each check passing; "
          f"uid {os.geteuid()}, detected isolation: {detected}")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        p90 = sorted(seconds)[int(0.9 * len(seconds))]
        print(f"  {name:28s} median {median * 1000:6.1f} ms/check   p90 {p90 * 1000:6.1f} ms"
              f"   ratio to baseline x{median / baseline:.2f}")


if __name__ == "__main__":
    main()
