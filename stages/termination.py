"""A stop request (SIGTERM from Airflow's on_kill, a timeout or `kill PID`; Ctrl-C) and
how a stage honours it.

The handler raises in the main thread, which unwinds the stage: its temporary output is
removed and its MLflow run ends KILLED. Python runs a handler between any two bytecodes,
also inside a garbage-collector callback (JAX registers one), where an exception is printed
as "Exception ignored in ..." and dropped, and the stage would go on. So the request is also
recorded: the training loops call check() between steps, and an exception that ends a stage
after a request (a BrokenPipeError once the Airflow task reading its output is gone) still
counts as a stop, not a failure."""

import signal

_requested: int | None = None


def install() -> None:
    """Route SIGTERM and SIGINT through the handler (main thread only)."""
    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def requested() -> int | None:
    """The signal number of the first stop request, None if there was none."""
    return _requested


def exit_code() -> int:
    """The shell's code for a process ended by the requested signal (143 for SIGTERM)."""
    return 128 + (_requested or 0)


def check() -> None:
    """Raises the stop (again) if one was requested: called where a long loop can stop
    cleanly, so a request whose first exception was dropped is not lost."""
    if _requested is not None:
        _raise(_requested)


def _handle(signum, frame) -> None:
    global _requested
    first = _requested is None
    _requested = _requested or signum
    # a repeated SIGTERM (an escalating supervisor) must not interrupt the unwinding the first
    # one started; a repeated Ctrl-C is a person insisting, and interrupts it
    if first or signum == signal.SIGINT:
        _raise(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
