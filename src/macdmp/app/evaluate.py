"""`macdmp evaluate`, `macdmp report` and `macdmp sim-study`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from macdmp.app.options import (
    at_least,
    check_size,
    option_error,
    out_dir,
    out_file,
    split_rfs,
    split_scenarios,
)
from macdmp.common.outputs import atomic_write_text, check_output_dir
from macdmp.common.signals import stop_at_safe_points
from macdmp.eval.evaluate import evaluate, write_result_json
from macdmp.eval.plots import plot_family_map, plot_result
from macdmp.eval.report import write_report
from macdmp.eval.sim_study import (
    allocator_table,
    family_map,
    family_markdown,
    load_sweep,
    markdown,
)
from macdmp.policies.episodes import format_table
from macdmp.sim.config import PAPER_SCENARIOS, load_scenario
from macdmp.sim.families import FAMILIES
from macdmp.sim.seeds import EVAL_FRAMES, EVAL_SEEDS

ALLOCATOR_SET = (
    "behaviour",
    "carried",
    "equal",
    "ratio",
    "proportional",
    "maxweight",
    "backpressure",
    "random",
)
TABLE_COLUMNS = (
    "policy",
    "rf",
    "avg_reward",
    "throughput_mbps",
    "mean_delay_ms",
    "loss_rate",
    "loss_aware_delay_ms",
    "act_ms_per_frame",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run allocators and trained runs on identical held-out networks; print one table",
        description="The paper's protocol: every policy runs the same held-out network seeds "
        "(>= 2**31, never in training data) in every scenario and RF condition. A row is "
        "the mean +- std over seeds of the per-seed average across scenarios.",
    )
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        help="an allocator name, behaviour[:SIGMA], static:D,... or a training run folder "
        "RUN_DIR[,key=value...] of any method (MA-CDMP keys: solver, steps, guide, candidates; "
        "every run: device, threads, weights, checkpoint, label, boost; docs/guide/evaluating.md "
        "explains them; macdmp:RUN_DIR also "
        "works); repeat for several",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(PAPER_SCENARIOS),
        help="comma-separated presets or TOML files (default: the four paper scenarios)",
    )
    p.add_argument("--seeds", type=int, default=EVAL_SEEDS, help="held-out seeds (default 3)")
    p.add_argument(
        "--seed-offset", type=int, default=0, help="skip this many held-out seeds (default 0)"
    )
    p.add_argument("--rf", default="ideal,limited", help="comma-separated: ideal,limited")
    p.add_argument(
        "--frames", type=int, default=EVAL_FRAMES, help="frames per episode (default 1000)"
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help="also write all results as JSON (folders made; an existing file needs --force)",
    )
    p.add_argument(
        "--no-traces",
        action="store_true",
        help="leave the per-frame delay traces out of the --json file (most of its size; "
        "`macdmp report` needs none of them, --plots' delay.png does)",
    )
    p.add_argument("--plots", metavar="DIR", help="write qos.png and delay.png here (made)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_evaluate)

    r = sub.add_parser(
        "report",
        help="merge `evaluate --json` files into a markdown report with tables and plots",
    )
    r.add_argument("--json", nargs="+", required=True, help="result files of macdmp evaluate")
    r.add_argument("--losses", nargs="*", default=[], help="losses.jsonl files of training runs")
    r.add_argument(
        "--out", required=True, help="folder for report.md, qos.png, training.png (made)"
    )
    r.add_argument("--title", default="Results", help="heading of the report and the plot")
    r.set_defaults(func=_report)

    s = sub.add_parser(
        "sim-study",
        help="validation study of the simulator: every allocator, every scenario, a load sweep",
        description="Every allocator in the four paper scenarios under ideal and limited RF, "
        "then a load sweep of one scenario under ideal RF; prints markdown tables "
        "(docs/sim-study.md is its output).",
    )
    s.add_argument("--frames", type=int, default=1000, help="frames per episode (default 1000)")
    s.add_argument("--seeds", type=int, default=3, help="held-out network seeds per cell (3)")
    s.add_argument(
        "--sweep-scenario",
        default="n9-2to7",
        help="scenario of the load sweep (default n9-2to7)",
    )
    s.add_argument(
        "--family",
        default=None,
        metavar="NAME[,NAME...]|all",
        help="map scenario families instead (docs/guide/families.md): every deployable allocator, "
        f"the behaviour policy and every reference, both RF conditions; families: "
        f"{', '.join(FAMILIES)}",
    )
    s.add_argument(
        "--plot", metavar="PNG", help="with --family: bar charts of the map, one per family"
    )
    s.add_argument(
        "--out",
        metavar="FILE",
        help="write the markdown tables here (default: print them; an existing file needs --force)",
    )
    s.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_sim_study)


@stop_at_safe_points()  # SIGINT/SIGTERM stop at the next frame; nothing is written then
def _evaluate(args: argparse.Namespace) -> int:
    at_least("--seed-offset", args.seed_offset, 0)
    scenarios = split_scenarios(args.scenarios)
    rfs = split_rfs(args.rf)
    check_size(args.seeds, args.frames, len(scenarios) * len(rfs))
    out_file("--json", args.json, force=args.force)
    out_dir("--plots", args.plots)
    result = evaluate(
        args.policy,
        scenarios,
        rfs,
        n_seeds=args.seeds,
        frames=args.frames,
        seed_offset=args.seed_offset,
        progress=not args.quiet,
    )
    print(format_table(result["rows"], TABLE_COLUMNS))
    print(
        f"{args.seeds} held-out seeds x {len(scenarios)} scenarios x {args.frames} frames; "
        "act_ms_per_frame: wall time of one decision for all agents of all networks stepped "
        "together; loss_aware_delay_ms: the delay with each lost packet counted at 1,000 ms"
    )
    if args.json:
        write_result_json(Path(args.json), result, traces=not args.no_traces)
        print(f"results written to {args.json}")
    if args.plots:
        plot_result(result, Path(args.plots))
        print(f"plots written to {args.plots}/")
    return 0


def _family_map(args: argparse.Namespace, show: bool) -> int:
    """`sim-study --family`: the map, as markdown (--out), its rows as JSON beside it, a plot."""
    names = list(FAMILIES) if args.family == "all" else [f for f in args.family.split(",") if f]
    bad = [f for f in names if f not in FAMILIES]
    if bad or not names:
        raise ValueError(
            f"--family: {bad[0] if bad else args.family!r} is not one of "
            f"{', '.join(FAMILIES)} (or 'all')"
        )
    rows_out = Path(args.out).with_suffix(".json") if args.out else None
    out_file("--out", str(rows_out) if rows_out else None, force=args.force)
    out_file("--plot", args.plot, force=args.force)
    rows = family_map(names, n_seeds=args.seeds, frames=args.frames, progress=show)
    text = family_markdown(rows, "macdmp " + " ".join(sys.argv[1:]))
    if args.out:
        atomic_write_text(args.out, text)
        atomic_write_text(rows_out, json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.out} and {rows_out}")
    else:
        print(text)
    if args.plot:
        plot_family_map(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _report(args: argparse.Namespace) -> int:
    check_output_dir("--out", args.out)
    path = write_report(args.json, args.losses, args.out, args.title)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


@stop_at_safe_points()  # SIGINT/SIGTERM stop at the next frame; nothing is written then
def _sim_study(args: argparse.Namespace) -> int:
    check_size(args.seeds, args.frames, 1)
    try:
        load_scenario(args.sweep_scenario)
    except ValueError as exc:
        raise option_error("--sweep-scenario", exc) from None
    out_file("--out", args.out, force=args.force)
    show = not args.quiet
    if args.family is not None:
        return _family_map(args, show)
    if args.plot:
        raise ValueError("--plot: draws the family map; give --family too")
    table = allocator_table(n_seeds=args.seeds, frames=args.frames, progress=show)
    sweep = load_sweep(
        scenario=args.sweep_scenario, n_seeds=args.seeds, frames=args.frames, progress=show
    )
    text = markdown(table, sweep, "macdmp " + " ".join(sys.argv[1:]))
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
