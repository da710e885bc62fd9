"""The `seekforge` command line. Each command group lives in its own module and adds
its subcommands here through a `register(subparsers)` function."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

from stages import convert_commands, model_commands, plan_commands, runtime_commands, termination

COMMAND_GROUPS = [model_commands, convert_commands, runtime_commands, plan_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seekforge", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


# exit codes: 2 = bad input (a config, a file, a corrupt input: retrying cannot help);
# 3 = a condition that may pass (the same key already running, MLflow not answering)
BAD_INPUT, TRY_LATER = 2, 3


def main(argv=None) -> int:
    from stages.artifacts import AlreadyRunning
    from stages.tracking import TrackingUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, KeyError) as e:  # bad input: one clear line, no traceback
        print(f"seekforge: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return BAD_INPUT
    except (AlreadyRunning, TrackingUnavailable) as e:
        print(f"seekforge: error: {e}", file=sys.stderr)
        return TRY_LATER


def entry() -> int:
    """The console script: main() in a process of its own. SIGTERM (Airflow's kill, a
    timeout, `kill PID`) unwinds the stage like an exception, so its temporary output is
    removed and its MLflow run is closed as KILLED, and every process the stage started
    (Beam's worker processes) is stopped with it rather than left behind. After a stop
    request the exit code is the signal's (143), whatever error the unwinding met."""
    termination.install()
    try:
        code = main()
    except Exception:
        if termination.requested() is None:
            raise
        code = termination.exit_code()   # e.g. a BrokenPipeError once the reader is gone
    finally:
        stop_children()
    return termination.exit_code() if termination.requested() else code


def stop_children(grace_seconds: float = 5.0) -> None:
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_seconds)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    sys.exit(entry())
