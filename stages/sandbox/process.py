"""The host side of one sandbox: start the bootstrap (bootstrap.py), load the candidate's
program into the worker, call its functions, kill everything.

Every wait ends by one deadline (time.monotonic()): reads and writes poll the pipes, never
block on them, so a worker (or anything it started) that holds a pipe open cannot hold the
caller. close() kills the worker (in "namespaces" mode the PID namespace's init, which
takes every process in the namespace with it) and waits for the bootstrap briefly.
"""

import marshal
import os
import select
import signal
import subprocess
import tempfile
import time

from stages.sandbox import bootstrap, isolation, plain_data, worker

# Both run as programs in the sandbox; importing them here also puts them in the stages'
# cache keys (stages/fingerprint.py follows imports), so changing them reruns GRPO/evaluate.
BOOTSTRAP = bootstrap.__file__
with open(worker.__file__, encoding="utf-8") as _f:
    WORKER_SOURCE = _f.read()
MAX_REPLY_BYTES = 1 << 20
MAX_STATUS_BYTES = 4096
REAP_SECONDS = 0.25           # per attempt to reap the bootstrap after the kill
EXIT_GRACE_SECONDS = 0.2      # for a worker that closed its pipes to finish exiting


class SandboxTimeout(BaseException):
    """The deadline passed. A BaseException, so the tests' `except Exception` cannot swallow it."""


class WorkerExited(BaseException):
    """The worker ended (or closed its pipes) before answering."""


class SandboxSetupError(Exception):
    """Isolation could not be set up; nothing of the candidate ran."""


class CandidateError(Exception):
    """The candidate's program or function raised, or returned something that is not plain data."""


class Sandbox:
    def __init__(self, program: str, limits: isolation.Limits, deadline: float, mode: str):
        self.program, self.limits, self.deadline, self.mode = program, limits, deadline, mode
        self.calls = 0
        self.exit_code: int | None = None
        self._process = self._done = self._workdir = None
        self._kill_pid = None
        self._broken: str | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self) -> None:
        """Spawn the sandbox and run the program's top level; CandidateError if it raised."""
        self._workdir = tempfile.TemporaryDirectory(prefix="seekforge-sandbox-")
        ids = isolation.sandbox_ids()
        if ids and self.mode == isolation.PLAIN:
            os.chown(self._workdir.name, *ids)        # the worker's own scratch directory
        status_read, status_write = os.pipe()
        done_read, self._done = os.pipe()
        config = {"mode": self.mode, "status_fd": status_write, "done_fd": done_read, "ids": ids,
                  "rlimits": self.limits.rlimits(), "tmp_bytes": self.limits.tmp_bytes,
                  "jail": self._workdir.name, "contents": isolation.jail_contents(),
                  "python": isolation.PYTHON, "worker": WORKER_SOURCE}
        try:
            self._process = subprocess.Popen(
                [isolation.PYTHON, "-I", "-S", BOOTSTRAP, marshal.dumps(config).hex()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                cwd=self._workdir.name, env={}, start_new_session=True, pass_fds=(status_write, done_read))
        finally:
            os.close(status_write)
            os.close(done_read)
        try:
            status = self._read_status(status_read)
        finally:
            os.close(status_read)
        if not status.startswith("ok "):
            raise SandboxSetupError(status.removeprefix("error ") or "the bootstrap exited during setup")
        self._kill_pid = int(status[3:])
        for pipe in (self._process.stdin, self._process.stdout):
            os.set_blocking(pipe.fileno(), False)
        self._send(plain_data.program(self.program))
        self._reply("the program", "ready")

    def call(self, name: str, args: tuple, kwargs: dict):
        """The candidate's `name(*args, **kwargs)`, run in the sandbox; its result as plain data."""
        message = plain_data.request(name, args, kwargs)
        if self._broken:
            raise CandidateError(self._broken)
        self.calls += 1
        self._send(message)
        return self._reply(f"{name}()", "value")

    def function(self, name: str) -> "CandidateFunction":
        return CandidateFunction(self, name)

    def close(self, exited: bool = False) -> None:
        """Kill the worker and everything it started; idempotent. `exited`: the worker
        seems to have ended by itself; give it a moment, so exit_code is its own."""
        if exited and self._kill_pid is not None:
            _wait_for_exit(self._kill_pid, EXIT_GRACE_SECONDS)
        if self._process is not None:
            if self._kill_pid is not None and self.mode == isolation.NAMESPACES:
                _signal(os.kill, self._kill_pid)       # not reaped by the bootstrap yet: not reused
            else:
                _signal(os.killpg, self._process.pid)  # plain: the worker is the bootstrap, exec'd
        if self._done is not None:
            os.close(self._done)                       # the bootstrap kills (again), reaps, exits
            self._done = None
        if self._process is not None:
            for pipe in (self._process.stdin, self._process.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self.exit_code = _reap(self._process)
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _reply(self, what: str, expected: str):
        """The reply of kind `expected` ("ready" or "value"), or CandidateError."""
        try:
            tree = plain_data.reply(self._receive())
            if tree[0] == "raised" and len(tree) == 3 and all(type(t) is str for t in tree[1:]):
                raise CandidateError(f"{what} raised {tree[1]}: {tree[2]}")
            if tree == ["ready"] and expected == "ready":
                return None
            if tree[0] == "value" and len(tree) == 2 and expected == "value":
                return plain_data.from_plain(tree[1])
            raise plain_data.UnreadableData(f"a {tree[0]!r} reply where {expected!r} was due")
        except plain_data.UnreadableData as error:
            self._broken = f"{what} sent something that is not plain data ({error})"
            raise CandidateError(self._broken) from None

    def _send(self, body: bytes) -> None:
        data = memoryview(len(body).to_bytes(4, "big") + body)
        fd = self._process.stdin.fileno()
        while data:
            self._wait_for(fd, select.POLLOUT)
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise WorkerExited() from None

    def _receive(self) -> bytes:
        size = int.from_bytes(self._read(4), "big")
        if size > MAX_REPLY_BYTES:
            self._broken = f"a reply of {size} bytes (the limit is {MAX_REPLY_BYTES})"
            raise CandidateError(self._broken)
        return self._read(size)

    def _read(self, size: int) -> bytes:
        data, fd = bytearray(), self._process.stdout.fileno()
        while len(data) < size:
            self._wait_for(fd, select.POLLIN)
            try:
                chunk = os.read(fd, size - len(data))
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerExited()
            data += chunk
        return bytes(data)

    def _read_status(self, fd: int) -> str:
        data = b""
        while not data.endswith(b"\n") and len(data) < MAX_STATUS_BYTES:
            self._wait_for(fd, select.POLLIN)
            chunk = os.read(fd, MAX_STATUS_BYTES)
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace").strip()

    def _wait_for(self, fd: int, event: int) -> None:
        poller = select.poll()           # poll, not select: fds above 1024 are common in TF processes
        poller.register(fd, event)
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxTimeout()
            if poller.poll(remaining * 1000 + 1):
                return


class CandidateFunction:
    """Stands in for the candidate's function `name` in the trusted tests."""

    def __init__(self, sandbox: Sandbox, name: str):
        self._sandbox, self.__name__ = sandbox, name

    def __call__(self, *args, **kwargs):
        return self._sandbox.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<candidate function {self.__name__}>"


def _reap(process: subprocess.Popen) -> int | None:
    """The bootstrap's exit code (the worker's, in "namespaces" mode), waiting at most
    2 * REAP_SECONDS (it normally exits within milliseconds of the kill)."""
    for _ in range(2):
        exited = _wait_for_exit(process.pid, REAP_SECONDS)
        try:
            code = process.wait(REAP_SECONDS if exited is None else 0.05)
            return code if code >= 0 else 128 - code       # killed by signal N: 128 + N, as a shell says
        except subprocess.TimeoutExpired:
            _signal(os.killpg, process.pid)
    return None


def _wait_for_exit(pid: int, seconds: float) -> bool | None:
    """Whether `pid` (not reaped yet: ours, or PID 1 of a sandbox) exited within `seconds`,
    woken by a pidfd the moment it does (Popen.wait(timeout) polls with growing sleeps);
    None without pidfds."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):       # before Linux 5.3
        return None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    finally:
        os.close(pidfd)


def _signal(kill, pid: int) -> None:
    try:
        kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
