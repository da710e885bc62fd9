"""The sandbox's first process: `python -I -S bootstrap.py CONFIG` (stdlib only), started by
process.py with an empty environment. It isolates and limits itself, then execs the worker
(worker.py); no candidate code runs before every limit is in place.

Mode "namespaces": unshare mount, PID, network, IPC, UTS (and, when not root, user)
namespaces; build the read-only jail; fork. The child is PID 1 of the new PID namespace:
it chroots into the jail and forks the worker, which sets the limits and execs; the
worker drops to an unprivileged uid before it reads the program. Killing PID 1 ends the
namespace and every process in it. This process stays outside as PID 1's parent and does
not reap it until the host is done, so the pid the host kills can never have been reused.

Mode "plain": set the limits, confine the process with Landlock where the kernel has it,
exec the worker in place (it drops the uid when root).

fds: 0/1 are the worker's request/response pipes; config["status_fd"] receives
"ok <pid to kill>\\n" or "error <why>\\n"; EOF on config["done_fd"] means the host is done
(or gone): the worker is killed and reaped, and this process exits with its status.
"""

import ctypes
import marshal
import os
import resource
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
ST_RELATIME = 4096                 # statvfs's bit for relatime; the others equal the MS_ bits
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
SIGKILL = 9                        # not signal.SIGKILL: importing signal (and enum) costs ~5 ms a sandbox
NOBODY = 65534
# Landlock (linux/landlock.h); the syscall numbers are the same on every architecture but alpha
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}   # by ABI version
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2                            # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2                 # ABI 6

libc = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source, target, fstype, flags, options=None) -> None:
    encode = lambda text: None if text is None else text.encode()
    checked(libc.mount(encode(source), encode(target), encode(fstype), flags, encode(options)),
            f"mount {target}")


def enter_namespaces(root: bool) -> None:
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    checked(libc.unshare(flags if root else flags | CLONE_NEWUSER), "unshare")
    if not root:       # the one mapping a user may write: itself, seen as "nobody" inside
        for name, text in (("setgroups", "deny"), ("uid_map", f"{NOBODY} {uid} 1"),
                           ("gid_map", f"{NOBODY} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)


def kept_flags(path: str) -> int:
    """The source mount's flags: a user namespace may add flags to a bind mount but not
    clear the ones it inherited, so a read-only remount must repeat them."""
    flags = os.statvfs(path).f_flag
    kept = flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if flags & ST_RELATIME:
        kept |= MS_RELATIME
    elif not flags & MS_NOATIME:
        kept |= MS_STRICTATIME
    return kept


def build_jail(jail: str, contents, tmp_bytes: int) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)        # nothing we mount reaches the host
    mount("tmpfs", jail, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for kind, path, *link in contents:
        inside = jail + path
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        if kind == "link":
            os.symlink(link[0], inside)
            continue
        if kind == "dir":
            os.makedirs(inside, exist_ok=True)
        else:
            os.close(os.open(inside, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(path, inside, None, MS_BIND | MS_REC)
        no_devices = 0 if kind == "device" else MS_NODEV
        mount(None, inside, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | no_devices | kept_flags(path))
    os.mkdir(jail + "/tmp")
    mount("tmpfs", jail + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_bytes},mode=1777")
    mount(None, jail, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    return max(libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION), 0)


def confine_with_landlock(contents, private_dir: str) -> int:
    """Plain mode's stand-in for the jail, where the kernel has Landlock (unprivileged, and
    allowed by Docker's default seccomp profile): from here on this process and what it
    execs may only read and execute the interpreter's files, use the devices, and write in
    `private_dir`; with ABI >= 4 bind or connect no TCP socket; with ABI >= 6 signal no
    process and reach no abstract unix socket outside. Returns the ABI used (0: none)."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    fs = max(rights for version, rights in FS_RIGHTS.items() if version <= abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("<QQQ", fs, net, scoped)[:8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        checked(ruleset, "landlock_create_ruleset")
    access = {"dir": FS_EXECUTE | FS_READ_FILE | FS_READ_DIR, "file": FS_EXECUTE | FS_READ_FILE,
              "device": FS_READ_FILE | FS_WRITE_FILE}
    rules = [(path, access[kind]) for kind, path, *_ in contents if kind in access] + [(private_dir, fs)]
    try:
        for path, allowed in rules:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("<Qi", allowed, fd)           # landlock_path_beneath_attr, packed
                checked(libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0),
                        f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        checked(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def limit(config) -> None:
    checked(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")   # setuid files stay inert
    for name, value in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (value, value))


def exec_worker(config) -> None:
    # As root the worker itself drops to config["ids"] first thing, before it reads the
    # program (the interpreter may live where only root can read, e.g. /root/.pyenv);
    # as a user, an exec by a non-root uid (inside the user namespace too) keeps no capabilities.
    ids = [str(i) for i in config["ids"] or ()]
    os.execve(config["python"], [config["python"], "-I", "-S", "-c", config["worker"], *ids], {})


def run_as_namespace_init(config) -> None:
    """PID 1 of the new namespace: fork the worker, reap orphans, exit with the worker's
    status (which ends the namespace). The worker is not PID 1 itself, so signals it
    sends itself act as anywhere else; this process runs no candidate code, is
    non-dumpable, and keeps capabilities the worker lacks, so the worker cannot trace it."""
    try:
        os.close(config["status_fd"])
        os.close(config["done_fd"])
        checked(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(DUMPABLE)")
        os.chroot(config["jail"])
        os.chdir("/tmp")
        worker = os.fork()
        if worker == 0:
            limit(config)             # here, not in PID 1: RLIMIT_NPROC counts PID 1 too
            exec_worker(config)
        os.close(0)
        os.close(1)
        while True:
            pid, wait_status = os.wait()
            if pid == worker:
                os._exit(exit_code(wait_status))
    finally:
        os._exit(127)


def exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def main() -> int:
    config = marshal.loads(bytes.fromhex(sys.argv[1]))
    status, done = config["status_fd"], config["done_fd"]
    os.umask(0o022)
    try:
        if config["mode"] == "plain":
            limit(config)                   # no new privileges first: Landlock requires it
            confine_with_landlock(config["contents"], os.getcwd())
        else:
            enter_namespaces(root=os.geteuid() == 0)
            build_jail(config["jail"], config["contents"], config["tmp_bytes"])
    except (OSError, ValueError) as error:
        os.write(status, f"error {error}\n".encode())
        return 2
    if config["mode"] == "plain":
        os.write(status, f"ok {os.getpid()}\n".encode())
        os.close(status)
        os.close(done)
        exec_worker(config)
    pid = os.fork()
    if pid == 0:
        run_as_namespace_init(config)
    os.close(0)          # only the worker may hold its pipes: the host reads EOF when it dies
    os.close(1)
    os.write(status, f"ok {pid}\n".encode())
    os.close(status)
    while os.read(done, 1):
        pass
    os.kill(pid, SIGKILL)             # not reaped yet: this pid is still ours
    _, wait_status = os.waitpid(pid, 0)
    return exit_code(wait_status)


if __name__ == "__main__":
    os._exit(main())          # no interpreter teardown: the host is waiting for this exit
