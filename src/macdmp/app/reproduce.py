"""``macdmp reproduce``: the paper's experiments (Figs. 3-9) as one resumable command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from macdmp.common.signals import sigterm_raises
from macdmp.methods.checkpoint import pick_device
from macdmp.reproduce.plan import FIGURE_NAMES, Plan, build_plan, parse_only
from macdmp.reproduce.report import write_report
from macdmp.reproduce.scales import SCALE_NAMES
from macdmp.reproduce.worklist import Store, run_local, run_ray, to_run

EXIT_TIME_LIMIT = 75  # stopped at --time-limit: run the same command again to go on


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the paper's experiments (Figs. 3-9) as a resumable work list; report with "
        "a verdict per claim",
        description="Collect, train and evaluate everything Figs. 3-9 need at the chosen "
        "scale, then write OUT/report.md with every figure as a PNG and a verdict per claim. "
        "Each unit of work leaves a result file in OUT/results/; a unit whose result exists is "
        "not run again, so the same command resumes an interrupted reproduction and a second "
        "run does no work. docs/guide/reproducing.md explains the scales, the work list and the "
        "rules of the verdicts.",
    )
    p.add_argument("--scale", choices=SCALE_NAMES, default="smoke", help="default: smoke")
    p.add_argument("--out", required=True, help="folder of report.md, the figures and results/")
    p.add_argument(
        "--work",
        help="folder of the dataset and run folders (large; default OUT/work). Only the "
        "results in OUT/results/ are needed to rebuild the report",
    )
    p.add_argument("--only", help=f"comma list of figures (default all): {','.join(FIGURE_NAMES)}")
    add_worklist_options(
        p,
        units_help="run only the units of the chosen figures whose keys match (and what they "
        "need), e.g. 'train-ma-cdmp-s0,eval-ma-cdmp-s0-*'; `--list` shows the keys",
    )
    p.set_defaults(func=run_reproduce)


def add_worklist_options(p: argparse.ArgumentParser, units_help: str) -> None:
    """The options of a command that runs a work list (``reproduce``, ``bench``) after its
    --out, --work and own options: which units, the executors, the report."""
    p.add_argument("--units", metavar="GLOB[,GLOB...]", help=units_help)
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rebuild the report from the result files that exist",
    )
    p.add_argument(
        "--use-stale",
        action="store_true",
        help="with --report-only: also use results made with other settings (listed as stale)",
    )
    p.add_argument("--list", action="store_true", help="print the units and their state; run none")
    p.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="run the units as Ray tasks: 'auto' joins this machine's cluster or starts a "
        "local one; or a cluster address (needs `pip install macdmp[ray]`)",
    )
    p.add_argument(
        "--train-gpus",
        type=float,
        help="with --ray: GPUs each training unit asks for (default 0.5 when the cluster has "
        "GPUs, else 0)",
    )
    p.add_argument(
        "--eval-gpus",
        type=float,
        help="with --ray: GPUs each evaluation asks for (default 0.25 with GPUs, else 0)",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=None,
        help="without --ray: ready training runs trained at once on one GPU, stacked as one "
        "model where they share a method and shapes, else packed (default: 4 on a GPU, 1 on "
        "the CPU)",
    )
    p.add_argument("--device", help="torch device for training and planning (default: the scale's)")
    p.add_argument(
        "--compile", action="store_true", help="without --ray: torch.compile the backbones (GPU)"
    )
    p.add_argument(
        "--collect-threads",
        type=int,
        default=1,
        help="simulator threads for the dataset collection (default 1; the data do not depend "
        "on it)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads in this process (default 1)"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop after this long as on SIGTERM (training saves its checkpoint; an unfinished "
        f"unit leaves no result); exit status {EXIT_TIME_LIMIT}, run again to go on",
    )
    p.add_argument("--no-plots", action="store_true", help="report without the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _time_limit(seconds: float | None) -> tuple[threading.Timer | None, list[bool]]:
    fired = [False]
    if seconds is None:
        return None, fired
    if seconds <= 0:
        raise ValueError(f"--time-limit: must be > 0 seconds (got {seconds})")

    def stop() -> None:
        fired[0] = True
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Timer(seconds, stop)
    t.daemon = True
    t.start()
    return t, fired


def run_reproduce(args: argparse.Namespace) -> int:
    figures = parse_only(args.only)
    out, work, units = check_worklist_args(args)
    plan = build_plan(args.scale)

    def report() -> None:
        stale = args.report_only and args.use_stale
        verdicts = write_report(plan, out, figures, plots=not args.no_plots, use_stale=stale)
        print(f"report: {out / 'report.md'}")
        for name, v in verdicts.items():
            print(f"  {name}: {v['verdict']}")

    return run_worklist(
        args, plan, out, work, figures, units, report, f"reproduce --scale {args.scale}"
    )


def check_worklist_args(args: argparse.Namespace) -> tuple[Path, Path, list[str] | None]:
    """The output and work folders and the --units globs, the options of
    ``add_worklist_options`` checked before any work starts."""
    units = [u.strip() for u in args.units.split(",") if u.strip()] if args.units else None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    work = Path(args.work) if args.work else out / "work"
    if args.pack is not None and args.pack < 1:
        raise ValueError(f"--pack: must be >= 1 (got {args.pack})")
    if args.threads < 1:
        raise ValueError(f"--threads: must be >= 1 (got {args.threads})")
    for name in ("train_gpus", "eval_gpus"):
        v = getattr(args, name)
        if v is not None and not 0 <= v:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 0 (got {v})")
    return out, work, units


def run_worklist(
    args: argparse.Namespace,
    plan: Plan,
    out: Path,
    work: Path,
    figures: list[str] | None,
    units: list[str] | None,
    report: Callable[[], None],
    command: str,
) -> int:
    """Run what the work list ``plan`` still needs (or list it, or only report) as the options
    of ``add_worklist_options`` say, then ``report()``; the exit status."""
    store = Store(out)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    if args.report_only:
        report()
        return 0
    keys = to_run(plan, store, work, figures, units)
    if args.list:
        for k in plan.needed(figures, units):
            u = plan.units[k]
            state = store.status(u)
            mark = "run" if k in keys else "-"
            print(f"{mark:4} {state:8} {u.kind:5} {k}  ({u.label})")
        return 0
    n_all = len(plan.needed(figures, units))
    if units is not None and n_all == 0:
        raise ValueError(f"--units: no unit of the chosen figures matches {args.units!r}")
    say(f"{command}: {n_all} units, {len(keys)} to run, work in {work}")
    if not keys:
        print(f"nothing to do: all {n_all} units have current results")
        report()
        return 0
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    device = args.device or plan.scale.device
    work.mkdir(parents=True, exist_ok=True)
    timer, fired = _time_limit(args.time_limit)
    t0 = time.perf_counter()
    try:
        with sigterm_raises():
            if args.ray:
                outcome = run_ray(
                    plan, store, work, keys, args.ray, args.train_gpus, args.eval_gpus, device,
                    args.quiet,
                )  # fmt: skip
            else:
                dev = pick_device(device)
                pack = args.pack or (4 if dev.type == "cuda" else 1)
                outcome = run_local(
                    plan, store, work, keys, str(dev), pack, progress=not args.quiet,
                    quiet=args.quiet, compile=args.compile, collect_threads=args.collect_threads,
                )  # fmt: skip
            if timer is not None:  # inside the handler: a late signal is still caught
                timer.cancel()
    except KeyboardInterrupt:
        if fired[0]:
            print(
                f"stopped at the time limit ({args.time_limit:g} s); checkpoints saved, run the "
                "same command to go on",
                file=sys.stderr,
            )
            report()
            return EXIT_TIME_LIMIT
        print("interrupted; run the same command to go on", file=sys.stderr)
        return 130
    finally:
        if timer is not None:
            timer.cancel()
        torch.set_num_threads(threads_before)
    print(
        f"ran {len(outcome.ran)} units in {time.perf_counter() - t0:.0f} s; "
        f"{len(outcome.failed)} failed, {len(outcome.skipped)} skipped"
        + (f", {len(outcome.by_others)} made by another process" if outcome.by_others else "")
    )
    for k, why in {**outcome.failed, **outcome.skipped}.items():
        print(f"  {k}: {why}")
    report()
    return 1 if outcome.failed or outcome.skipped else 0
