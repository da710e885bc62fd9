"""Stop requests: a dropped first exception is raised again where a loop checks, and a
repeated signal does not interrupt the unwinding the first one started."""

import os
import signal
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_script(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent("""
        import os, signal, sys
        from stages import termination
        from tests.stages.lost_signal import send_inside_gc_callback
        termination.install()

        def signal_self(signum):
            os.kill(os.getpid(), signum)
            sum(range(100))   # bytecodes after the kill: the handler runs here
    """) + textwrap.dedent(body)
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
            signal_self(signal.SIGINT)
        except KeyboardInterrupt:
            print("KeyboardInterrupt", termination.requested() == signal.SIGINT, flush=True)
    """)
    assert done.stdout.splitlines() == ["KeyboardInterrupt True"], done.stderr


def test_a_second_signal_does_not_interrupt_the_unwinding():
    done = run_script("""
        try:
            signal_self(signal.SIGTERM)
        except SystemExit:
            signal_self(signal.SIGTERM)   # e.g. Airflow's escalation, during the cleanup
            print("cleanup finished", flush=True)
        sys.exit(termination.exit_code())
    """)
    assert done.stdout.splitlines() == ["cleanup finished"], done.stderr
    assert done.returncode == 128 + signal.SIGTERM


def test_a_second_ctrl_c_interrupts_the_cleanup():
    done = run_script("""
        try:
            signal_self(signal.SIGINT)
        except KeyboardInterrupt:
            try:
                signal_self(signal.SIGINT)
                print("cleanup finished", flush=True)
            except KeyboardInterrupt:
                print("cleanup interrupted", flush=True)
    """)
    assert done.stdout.splitlines() == ["cleanup interrupted"], done.stderr
