"""The ``macdmp`` command: one subcommand per stage, each in its own module of this folder.

``macdmp [--plugin MODULE ...] COMMAND ...``: ``--plugin`` imports a module that registers
methods (``macdmp.methods.register_method``) before the commands are built, so that
``train --method NAME``, ``evaluate --policy RUN_DIR`` and ``reproduce`` know them; methods of
installed packages (entry-point group ``macdmp.methods``) need no option.
"""

from __future__ import annotations

import argparse
import sys

from macdmp.app import bench, data, demo, evaluate, reproduce, simulate, train
from macdmp.methods.base import load_plugins

# the order of `macdmp --help`
COMMANDS = (
    simulate,  # simulate
    data,  # collect, dataset info|validate
    train,  # train (any method)
    evaluate,  # evaluate, report, sim-study
    demo,  # demo
    reproduce,  # reproduce
    bench,  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="macdmp",
        description="MA-CDMP: diffusion planning for MF-TDMA resource allocation",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: it registers methods of its own (repeatable; docs: "
        "'Adding your own method')",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def _plugins(argv: list[str]) -> list[str]:
    """The ``--plugin`` modules before the command: loaded before the parser is built, since
    the commands' choices and help list the methods."""
    out, k = [], 0
    while k < len(argv) and argv[k].startswith("-"):  # up to the command
        if argv[k] == "--plugin" and k + 1 < len(argv):
            out.append(argv[k + 1])
            k += 1
        elif argv[k].startswith("--plugin="):
            out.append(argv[k].partition("=")[2])
        k += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(_plugins(argv))
    except ValueError as exc:
        print(f"macdmp: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # configuration, input and file errors carry messages that name the field
        print(f"macdmp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
