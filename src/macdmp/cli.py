"""The `macdmp` command. Each stage of the pipeline registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> it defines register(subparsers); the order is the order of `macdmp --help`
STAGES = (
    "macdmp.sim.cli",  # simulate
    "macdmp.data.cli",  # collect, dataset info|validate
    "macdmp.methods.cli",  # train (any method)
    "macdmp.eval.cli",  # evaluate, demo
    "macdmp.reproduce.cli",  # reproduce
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="macdmp",
        description="MA-CDMP: diffusion planning for MF-TDMA resource allocation",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not a stage not yet built
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
