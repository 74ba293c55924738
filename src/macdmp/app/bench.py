"""``macdmp bench``: every learned method on the scenario families as one resumable work list,
with a leaderboard (docs/guide/bench.md)."""

from __future__ import annotations

import argparse

from macdmp.app.reproduce import add_worklist_options, check_worklist_args, run_worklist
from macdmp.bench.leaderboard import write_report
from macdmp.bench.plan import bench_methods, build_bench, parse_list
from macdmp.bench.scales import SCALE_NAMES
from macdmp.sim.families import FAMILIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark every learned method on the scenario families (resumable work list); "
        "a leaderboard with three answers per family",
        description="For each family: collect its dataset, train every method at three "
        "training seeds (each run keeps the checkpoint its validation evaluations chose beside "
        "the last), evaluate both checkpoints and the family's allocators and references on "
        "the held-out test networks, then write OUT/report.md: the leaderboard, a heat map, a "
        "bar chart per family and three answers per family. Each unit leaves a result file in "
        "OUT/results/; a second run does no work. docs/guide/bench.md explains the scales, the "
        "methods, the model selection and the rules of the answers.",
    )
    p.add_argument("--scale", choices=SCALE_NAMES, default="smoke", help="default: smoke")
    p.add_argument("--out", required=True, help="folder of report.md, the figures and results/")
    p.add_argument(
        "--work",
        help="folder of the datasets and run folders (large; default OUT/work). Only the "
        "results in OUT/results/ are needed to rebuild the report",
    )
    p.add_argument(
        "--families",
        metavar="NAME[,NAME...]",
        help=f"comma list of {','.join(FAMILIES)} (default: the scale's: smoke and demo "
        "paper,load100,sessions; paper all)",
    )
    p.add_argument(
        "--methods",
        metavar="NAME[,NAME...]",
        help="comma list of the learned methods (default all): "
        f"{','.join(bench_methods())} and any method registered as a plugin",
    )
    add_worklist_options(
        p,
        units_help="run only the units whose keys match (and what they need), e.g. "
        "'train-paper-ma-cdmp-s0,eval-paper-ma-cdmp-s0-*'; `--list` shows the keys",
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    families = parse_list("--families", args.families, list(FAMILIES))
    methods = parse_list("--methods", args.methods, list(bench_methods()))
    out, work, units = check_worklist_args(args)
    bench = build_bench(args.scale, families, methods)

    def report() -> None:
        stale = args.report_only and args.use_stale
        record = write_report(bench, out, plots=not args.no_plots, use_stale=stale)
        print(f"report: {out / 'report.md'}")
        for col, answers in record["answers"].items():
            print(f"  {col}: " + "; ".join(f"{q} {a['answer']}" for q, a in answers.items()))

    return run_worklist(args, bench.plan, out, work, None, units, report, bench.command())
