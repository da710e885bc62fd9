"""What a sandbox is isolated with, per mode, and the limits it runs under.

"namespaces" (Linux, as root or as a user allowed unprivileged user namespaces): new PID,
network, mount, IPC and UTS namespaces; a chroot jail that holds only the Python
installation (read-only, no setuid) and a private 16 MiB tmpfs /tmp; no /proc; an
unprivileged uid (as root: a random uid no file belongs to; as a user: "nobody" inside a
user namespace, which maps to that user); no new privileges. The worker is the
namespace's PID 1, so killing it kills every process in the namespace, setsid'd and
double-forked ones included (a backstop: the limits allow no forks at all).

"plain" (the fallback where namespaces are refused, e.g. under Docker's and Kubernetes'
default seccomp profiles, which is where the stage image runs): the same rlimits (no
forks, so nothing can outlive the kill of the process), empty environment, private
working directory, a random uid when root, and Landlock where the kernel has it
(bootstrap.confine_with_landlock): files only the interpreter's (read) and the private
directory (write), so no /proc/<pid>/environ, project or benchmark data; with Landlock
ABI >= 4 no TCP; with ABI >= 6 no signals to, and no abstract unix sockets of, other
processes. Never contained in "plain": UDP and other non-TCP sockets, connecting to
pathname unix sockets the uid may write; and without Landlock, everything that uid may
do (read /proc/<pid>/environ of its own processes, write its files, open sockets, signal).
"""

import dataclasses
import functools
import math
import os
import secrets
import sys

NAMESPACES, PLAIN = "namespaces", "plain"
PYTHON = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
FIRST_SANDBOX_UID = 1 << 30      # as root: uids from here on own no file (ids are 32-bit)
SANDBOX_IDS = 1 << 20
TOP_LEVEL_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


@dataclasses.dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int                  # address space of the one process
    processes: int = 1                 # RLIMIT_NPROC: 1 = no forks, no threads
    file_bytes: int = 1 << 20
    open_files: int = 64
    tmp_bytes: int = 16 << 20          # the jail's /tmp ("namespaces" mode)

    def rlimits(self) -> list[tuple[str, int]]:
        return [("RLIMIT_CPU", self.cpu_seconds), ("RLIMIT_AS", self.memory_bytes),
                ("RLIMIT_NPROC", self.processes), ("RLIMIT_FSIZE", self.file_bytes),
                ("RLIMIT_NOFILE", self.open_files), ("RLIMIT_CORE", 0)]


def limits(timeout: float, memory_mb: int) -> Limits:
    # No forks in either mode: a candidate needs none, memory stays bounded by one
    # process's limit, and in "plain" mode (not root) RLIMIT_NPROC counts all of the
    # user's processes, so only 1 is a bound at all. The PID namespace is the backstop.
    return Limits(cpu_seconds=math.ceil(timeout) + 1, memory_bytes=memory_mb << 20)


def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) to drop to when root: fresh per sandbox, so sandboxes cannot signal each
    other or share a process count. None when not root (the user namespace maps us)."""
    if os.geteuid() != 0:
        return None
    uid = FIRST_SANDBOX_UID + secrets.randbelow(SANDBOX_IDS)
    return uid, uid


@functools.cache
def jail_contents() -> tuple[tuple[str, ...], ...]:
    """("dir"|"file"|"device", path) to bind read-only, ("link", path, target) to recreate:
    what the interpreter needs to start (system libraries, its own prefix, the loader's
    cache, a few devices), nothing else: no project, no virtual environment, no /proc.
    The jail in "namespaces" mode; Landlock's allowed paths in "plain" mode."""
    contents, dirs = [], []
    for path in TOP_LEVEL_SYSTEM_DIRS:
        if os.path.islink(path):
            contents.append(("link", path, os.readlink(path)))
        elif os.path.isdir(path):
            contents.append(("dir", path))
            dirs.append(path)
    for path in (os.path.realpath(sys.base_prefix), os.path.dirname(PYTHON)):
        if not any(path == d or path.startswith(d + "/") for d in dirs):
            contents.append(("dir", path))
            dirs.append(path)
    contents += [("file", path) for path in SYSTEM_FILES if os.path.isfile(path)]
    contents += [("device", path) for path in DEVICES if os.path.exists(path)]
    return tuple(contents)
