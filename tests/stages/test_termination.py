"""Stop requests: a dropped first exception is raised again where a loop checks, and a
repeated signal does not interrupt the unwinding the first one started."""

import os
import signal
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(body: str) -> subprocess.CompletedProcess:
    script = "import os, signal, sys\nfrom stages import termination\nfrom tests.stages.lost_signal import " \
             "send_inside_gc_callback\ntermination.install()\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=60)


def test_a_dropped_stop_is_raised_again_at_the_next_check():
    done = run_script("""
        send_inside_gc_callback(signal.SIGTERM)
        print("went on after the dropped exception", flush=True)
        assert termination.requested() == signal.SIGTERM
        termination.check()
        print("not reached", flush=True)
    """)
    assert "Exception ignored" in done.stderr and "SystemExit: 143" in done.stderr, done.stderr
    assert done.stdout.splitlines() == ["went on after the dropped exception"]
    assert done.returncode == 128 + signal.SIGTERM


def test_no_check_passes_without_a_request_and_ctrl_c_stays_keyboard_interrupt():
    done = run_script("""
        termination.check()
        assert termination.requested() is None
        try:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(100))
        except KeyboardInterrupt:
            print("KeyboardInterrupt", termination.requested() == signal.SIGINT, flush=True)
    """)
    assert done.stdout.splitlines() == ["KeyboardInterrupt True"], done.stderr


def test_a_second_signal_does_not_interrupt_the_unwinding():
    done = run_script("""
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(100))
        except SystemExit:
            os.kill(os.getpid(), signal.SIGTERM)   # e.g. Airflow's escalation, during the cleanup
            sum(range(100))
            print("cleanup finished", flush=True)
        sys.exit(termination.exit_code())
    """)
    assert done.stdout.splitlines() == ["cleanup finished"], done.stderr
    assert done.returncode == 128 + signal.SIGTERM


def test_a_second_ctrl_c_interrupts_the_cleanup():
    done = run_script("""
        try:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(100))
        except KeyboardInterrupt:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(100))
                print("cleanup finished", flush=True)
            except KeyboardInterrupt:
                print("cleanup interrupted", flush=True)
    """)
    assert done.stdout.splitlines() == ["cleanup interrupted"], done.stderr
