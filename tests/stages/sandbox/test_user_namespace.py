"""The non-root paths (the Docker image runs stages as uid 1000): a user namespace instead
of root's setuid, and the plain fallback confined by Landlock (what Docker and Kubernetes
leave when their seccomp profiles refuse namespaces). Run here by dropping a host process
to an unprivileged uid under a system interpreter every user can read (the project's may
live under /root); skipped where that is not possible or the mode is unavailable."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from stages.sandbox import bootstrap
from tests.stages.sandbox import hostile

USER = 1000
SYSTEM_PYTHONS = ("/usr/bin/python3.11", "/usr/local/bin/python3.11", "/usr/bin/python3")

HOST = """
import json, os, socket, sys
from stages.sandbox import probe
from stages.sandbox import bootstrap
from tests.stages.sandbox import hostile
if sys.argv[2] == "plain":
    probe._mode = "plain"
own_dir = sys.argv[1]
target = os.path.join(own_dir, "escaped")
controls = {"env": hostile.unsandboxed(*hostile.env_read())}
try:
    hostile.unsandboxed(*hostile.file_write([target]))
except RuntimeError:
    pass
controls["file"] = os.path.exists(target)
os.remove(target)
rows = {name: hostile.run("grpo", *attack, 2.0) for name, attack in hostile.FORGED_PASS.items()}
rows["env read"] = hostile.run("grpo", *hostile.env_read(), 2.0)
rows["file write (user-owned dir)"] = hostile.run("grpo", *hostile.file_write([target]), 2.0)
with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    rows["socket"] = hostile.run("grpo", *hostile.socket_connect(listener.getsockname()[1]), 2.0)
rows["signal the host"] = hostile.run("grpo", *hostile.signal_process(os.getpid()), 2.0)
rows["fork bomb"] = hostile.run("grpo", *hostile.fork_bomb(own_dir + "-bomb"), 2.0)
rows["infinite loop"] = hostile.run("grpo", *hostile.INFINITE_LOOP, 2.0)
rows["correct answer"] = hostile.run("grpo", "", "return x + y", 5.0)
print(json.dumps({"mode": probe.isolation_mode(), "uid": os.geteuid(), "wrote": os.path.exists(target),
                  "controls": controls,
                  "rows": {name: [r.passed, r.status, s] for name, (r, s) in rows.items()}}))
"""


def system_python() -> str | None:
    return next((p for p in SYSTEM_PYTHONS if os.access(p, os.X_OK)), None)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["namespaces", "plain"])
def test_hostile_submissions_are_contained_for_an_unprivileged_user(mode):
    python = system_python()
    if os.geteuid() != 0 or not python or not shutil.which("setpriv"):
        pytest.skip("needs root (to become an unprivileged user), setpriv and a system python3")
    if mode == "plain" and bootstrap.landlock_abi() < 6:
        pytest.skip("plain mode contains these only with Landlock ABI 6 (Linux 6.12)")
    own_dir = tempfile.mkdtemp(prefix="seekforge-userns-")
    os.chown(own_dir, USER, USER)
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": hostile.PROJECT,
               hostile.SECRET_NAME: f"hunter2-{os.getpid()}"}
        out = subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", python, "-c",
                              HOST, own_dir, mode], env=env, cwd=own_dir, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(own_dir)
    if report["mode"] != mode:
        pytest.skip("unprivileged user namespaces are refused here")
    assert report["uid"] == USER and not report["wrote"]
    assert report["controls"] == {"env": 5, "file": True}        # unsandboxed, both attacks work
    rows = report["rows"]
    assert rows.pop("correct answer")[0], report
    assert [name for name, (passed, _, seconds) in rows.items() if passed or seconds >= 3.0] == [], rows
