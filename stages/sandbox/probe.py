"""Which isolation this machine allows, decided once per process: a trivial program runs
in "namespaces" mode; if that fails (e.g. Docker's default seccomp profile refuses
unshare), every sandbox of this process runs in "plain" mode, after a loud warning that
says why and what that mode does not contain (isolation.py)."""

import logging
import sys
import threading
import time

from stages.sandbox import bootstrap, isolation
from stages.sandbox.process import Sandbox, SandboxTimeout, WorkerExited

PROBE_SECONDS = 10.0          # generous: the first call may land on a busy machine
PROBE_PROGRAM = "def probe():\n    return 1\n"

_lock = threading.Lock()
_mode: str | None = None


def isolation_mode() -> str:
    global _mode
    with _lock:
        if _mode is None:
            _mode, reason = _probe()
            if _mode == isolation.PLAIN:
                logging.getLogger(__name__).warning(
                    "SANDBOX NOT FULLY ISOLATED: Linux namespaces are unavailable here (%s). Untrusted "
                    "code runs as a plain process with rlimits and no forks, %s. Run as root, or allow "
                    "user namespaces (e.g. a seccomp profile that permits unshare), to isolate it.",
                    reason, _landlock_note())
        return _mode


def _landlock_note() -> str:
    abi = bootstrap.landlock_abi() if sys.platform.startswith("linux") else 0
    if abi >= 6:
        return f"confined by Landlock ABI {abi} (files, TCP, signals) but WITH UDP and unix-socket access"
    if abi >= 4:
        return f"confined by Landlock ABI {abi} (files, TCP) but able to signal this user's processes and use UDP"
    if abi:
        return f"confined by Landlock ABI {abi} (files only) but WITH network access and signals"
    return ("WITH network access and the file and process permissions of this user (of a fresh uid, "
            "as root), /proc/<pid>/environ of its processes included: no Landlock in this kernel")


def _probe() -> tuple[str, str]:
    if not sys.platform.startswith("linux"):
        return isolation.PLAIN, f"not Linux ({sys.platform})"
    limits = isolation.limits(PROBE_SECONDS, 256)
    try:
        with Sandbox(PROBE_PROGRAM, limits, time.monotonic() + PROBE_SECONDS, isolation.NAMESPACES) as box:
            box.start()
            if box.call("probe", (), {}) == 1:
                return isolation.NAMESPACES, ""
            return isolation.PLAIN, "the probe returned a wrong value"
    except (Exception, SandboxTimeout, WorkerExited) as error:
        return isolation.PLAIN, f"{type(error).__name__}: {error}"
