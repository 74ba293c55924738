"""`macdmp sim-study`, `macdmp evaluate` and `macdmp demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim-study",
        help="validation study of the simulator: every allocator, every scenario, a load sweep",
    )
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3, help="evaluation seeds per cell")
    p.add_argument("--sweep-scenario", default="n9-2to7")
    p.add_argument("--out", help="write the markdown tables here (default: print)")
    p.set_defaults(func=_sim_study)


def _sim_study(args: argparse.Namespace) -> int:
    from .sim_study import allocator_table, load_sweep, markdown

    table = allocator_table(n_seeds=args.seeds, frames=args.frames)
    sweep = load_sweep(scenario=args.sweep_scenario, n_seeds=args.seeds, frames=args.frames)
    command = "macdmp " + " ".join(sys.argv[1:])
    text = markdown(table, sweep, command)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
