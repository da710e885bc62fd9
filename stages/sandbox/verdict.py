"""judge(): the verdict on a candidate program, decided here from data it cannot forge.

The candidate's program runs in a sandbox (process.py); the trusted `check` runs in this
process and reaches the candidate only through stand-ins (sandbox.function(name)) whose
calls return plain data. A pass means: the program loaded, `check` returned, and it called
the candidate at least once (tests that never ask cannot vouch for anything).
"""

import dataclasses
import random
import time
from typing import Callable

from stages.sandbox import isolation
from stages.sandbox.probe import isolation_mode
from stages.sandbox.process import CandidateError, Sandbox, SandboxSetupError, SandboxTimeout, WorkerExited

MAX_STATUS_CHARS = 300


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str      # "passed" | "failed: <why>" | "timed out" | "crashed (exit status N)"
    #                  | "sandbox setup failed: <why>"
    seconds: float


def judge(program: str, check: Callable[[Sandbox], None], timeout: float, memory_mb: int) -> SandboxResult:
    """Run `program` (untrusted source) in a sandbox and `check(sandbox)` (trusted tests)
    here; returns within about `timeout` seconds (everything ends by start + timeout, then
    the kill and reap take milliseconds)."""
    start = time.monotonic()
    sandbox = Sandbox(program, isolation.limits(timeout, memory_mb), start + timeout, isolation_mode())
    random_state = random.getstate()       # the tests may draw from (or seed) the global stream
    try:
        sandbox.start()
        check(sandbox)
        status = "passed" if sandbox.calls else "failed: the tests never called the candidate"
    except SandboxTimeout:
        status = "timed out"
    except WorkerExited:
        sandbox.close(exited=True)
        status = f"crashed (exit status {sandbox.exit_code})"
    except SandboxSetupError as error:
        status = f"sandbox setup failed: {error}"
    except CandidateError as error:
        status = f"failed: {error}"
    except Exception as error:             # the trusted tests failed: AssertionError, mostly
        status = f"failed: {type(error).__name__}: {_message(error)}"
    finally:
        sandbox.close()
        random.setstate(random_state)
    return SandboxResult(status == "passed", status[:MAX_STATUS_CHARS], time.monotonic() - start)


def _message(error: Exception) -> str:
    """str(error), which may hold a candidate's result (a 10**6-digit int cannot be printed)."""
    try:
        return str(error)[:MAX_STATUS_CHARS]
    except Exception:
        return "(a message that cannot be printed)"
