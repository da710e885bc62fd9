"""Print the hostile-submission table (issue 13): every attack through both code checks,
with what happened and whether the host saw any effect.

    python -m tests.stages.sandbox.hostile_table [--mode namespaces|plain]

The env-read row runs in a fresh host process (hostile.env_read_in_a_fresh_host) so that
the secret is in that host's /proc/<pid>/environ too.
"""

import argparse
import os
import socket
import time

from stages.sandbox import bootstrap, probe
from tests.stages.sandbox import hostile

TIMEOUT = 2.0


PATHS = hostile.PATHS


def row(name, setup_and_body, host_check=lambda: (False, "")) -> list[str]:
    """host_check() -> (whether the host saw an effect, what it saw)."""
    cells = [name]
    for path in PATHS:
        result, seconds = hostile.run(path, *setup_and_body, timeout=TIMEOUT)
        leaked, seen = host_check()
        verdict = "**NOT CONTAINED**" if result.passed or leaked else "contained"
        late = "" if seconds < TIMEOUT + 1 else f" **LATE ({seconds:.2f} s)**"
        cells.append(f"{verdict}{late}: {result.status} ({seconds:.2f} s){seen}")
    return cells


def env_row(mode: str, paths) -> list[str]:
    cells = ["env read (os.environ, /proc/*/environ)"]
    for path in paths:
        report = hostile.env_read_in_a_fresh_host(path, mode)
        verdict = "**NOT CONTAINED**" if report["passed"] else "contained"
        cells.append(f"{verdict}: {report['status']} ({report['seconds']:.2f} s)")
    return cells


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("namespaces", "plain"))
    parser.add_argument("--paths", nargs="+", default=hostile.PATHS, choices=hostile.PATHS,
                        help="grpo alone where HumanEval is not installed (a system interpreter)")
    args = parser.parse_args()
    global PATHS
    PATHS = args.paths
    if args.mode:
        probe._mode = args.mode
    mode = probe.isolation_mode()
    tag = f"seekforge-table-{os.getpid()}"
    rows = [[name, *row(name, attack)[1:]] for name, attack in hostile.FORGED_PASS.items()]
    rows.append(env_row(mode, PATHS))

    targets = [os.path.join(hostile.PROJECT, tag), f"/tmp/{tag}", f"/var/tmp/{tag}", f"/dev/shm/{tag}"]
    def leaked_files():
        leaked = [t for t in targets if os.path.exists(t)]
        for t in leaked:
            os.remove(t)
        return bool(leaked), f"; on the host: {leaked or 'no file'}"
    rows.append(row("file write outside (project, /tmp, /var/tmp, /dev/shm)", hostile.file_write(targets),
                    leaked_files))

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        def accepted():
            try:
                listener.accept()[0].close()
                return True, "; the host listener ACCEPTED a connection"
            except BlockingIOError:
                return False, "; the host listener got no connection"
        rows.append(row("socket to a 127.0.0.1 listener", hostile.socket_connect(listener.getsockname()[1]), accepted))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        def received():
            try:
                receiver.recv(64)
                return True, "; the host RECEIVED the datagram"
            except BlockingIOError:
                return False, "; the host received nothing"
        rows.append(row("UDP datagram to a 127.0.0.1 port", hostile.udp_send(receiver.getsockname()[1]), received))

    rows.append(row("read the project / HumanEval answers",
                    hostile.read_files(hostile.secret_files())))
    rows.append(row("signal a host process (kill(pid, 0))", hostile.signal_process(os.getpid())))
    def left(marker):
        def check():
            alive = hostile.live_processes_with(marker)
            return bool(alive), f"; live marked processes after: {len(alive)}"
        return check
    rows.append(row("fork bomb (64 forks wanted)", hostile.fork_bomb(tag + "-bomb"), left(tag + "-bomb")))

    marker = f"/tmp/{tag}-setsid"
    def escaped():
        alive = len(hostile.live_processes_with(marker))
        time.sleep(1.5)
        written = os.path.exists(marker)
        return bool(alive or written), f"; live grandchildren after: {alive}; marker written 1.5 s later: {written}"
    rows.append(row("setsid escape (double fork, sleeps, writes)", hostile.setsid_escape(marker), escaped))
    rows.append(row("memory hog (4 GiB)", hostile.MEMORY_HOG))
    rows.append(row("infinite loop (busy)", hostile.INFINITE_LOOP))
    rows.append(row("infinite loop (sleep)", hostile.SLEEP_FOREVER))

    landlock = f", Landlock ABI {bootstrap.landlock_abi()}" if mode == "plain" else ""
    print(f"isolation: {mode}{landlock}; uid {os.geteuid()}; timeout {TIMEOUT} s\n")
    titles = {"grpo": "GRPO reward (run_tests)", "humaneval": "HumanEval (HumanEval/53)"}
    print("| attack | " + " | ".join(titles[p] for p in PATHS) + " |")
    print("|---" * (len(PATHS) + 1) + "|")
    for cells in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")


if __name__ == "__main__":
    main()
