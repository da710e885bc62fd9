"""The `seekforge` command line. Each command group lives in its own module and adds
its subcommands here through a `register(subparsers)` function."""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

from stages import convert_commands, model_commands, runtime_commands

COMMAND_GROUPS = [model_commands, convert_commands, runtime_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seekforge", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"seekforge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
