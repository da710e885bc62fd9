"""What the worker sees in "namespaces" mode (an unprivileged uid, no network, a jail with
only the interpreter, an empty environment), and the PID-namespace kill: even where the
limits allow forks, a setsid'd grandchild dies when the sandbox is closed."""

import dataclasses
import os
import time

import pytest

from stages.sandbox import isolation, probe
from stages.sandbox.process import Sandbox
from tests.stages.sandbox import hostile

FACTS = """
import ctypes, os, socket
def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as error:
        return error.strerror
def unshare(flags):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def facts():
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "root": sorted(os.listdir("/")),
            "cwd": os.getcwd(), "environ": sorted(os.environ),
            "network": attempt(lambda: socket.create_connection(("127.0.0.1", 9), timeout=0.5)),
            "privileged": [attempt(lambda: os.setuid(0)), attempt(lambda: os.chroot("/tmp")),
                           attempt(lambda: unshare(0x10000000)), attempt(lambda: unshare(0x00020000))]}
"""


@pytest.fixture(autouse=True)
def namespaces_only():
    if probe.isolation_mode() != isolation.NAMESPACES:
        pytest.skip("this machine falls back to plain processes")


def test_the_worker_is_unprivileged_offline_and_jailed():
    with Sandbox(FACTS, isolation.limits(5.0, 256), time.monotonic() + 5.0, isolation.NAMESPACES) as sandbox:
        sandbox.start()
        facts = sandbox.call("facts", (), {})
    assert facts["uid"] != 0 and facts["gid"] != 0 and facts["groups"] == []
    assert facts["network"] == "Network is unreachable"
    assert "allowed" not in facts["privileged"], facts["privileged"]     # setuid(0), chroot, new namespaces
    assert facts["cwd"] == "/tmp"
    assert set(facts["environ"]) <= {"LC_CTYPE"}            # Python's own C-locale coercion
    # only the jail's contents: no /proc, no project, no /home, no /etc beyond ld.so.cache
    assert set(facts["root"]) == {path.split("/")[1] for _, path, *_ in isolation.jail_contents()} | {"tmp"}
    assert "proc" not in facts["root"]


def test_the_namespace_kill_takes_a_setsid_grandchild_even_where_forks_are_allowed():
    marker = f"/tmp/seekforge-pidns-{os.getpid()}"
    setup, _ = hostile.setsid_escape(marker)
    program = hostile.program("grpo", setup, "return ESCAPE")
    limits = dataclasses.replace(isolation.limits(5.0, 256), processes=8)
    with Sandbox(program, limits, time.monotonic() + 5.0, isolation.NAMESPACES) as sandbox:
        sandbox.start()
        assert sandbox.call("add", (1, 2), {}) == "grandchild started"
        deadline = time.monotonic() + 2.0
        while not hostile.live_processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hostile.live_processes_with(marker), "the escape never started"
        start = time.monotonic()
    assert time.monotonic() - start < 1.0
    assert hostile.live_processes_with(marker) == []
