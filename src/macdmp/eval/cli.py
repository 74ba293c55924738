"""`macdmp evaluate`, `macdmp demo` and `macdmp sim-study`."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from macdmp.eval.protocol import EVAL_FRAMES, EVAL_SEEDS
from macdmp.outputs import atomic_write_text, check_output_dir, check_output_file, disk_errors_named
from macdmp.signals import stop_at_safe_points
from macdmp.sim.cli import MAX_NETWORK_FRAMES, option_error
from macdmp.sim.config import PAPER_SCENARIOS, RF_MODES
from macdmp.sim.families import FAMILIES

from .plots import plot_family_map
from .sim_study import family_map, family_markdown

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
# What `macdmp demo` runs. "fast" (the default) fits a few minutes on a 2-core CPU; "full" is
# the `demo` training preset unchanged. train_sets are `macdmp train --set` overrides of the
# `demo` preset; planner is appended to the run folder's policy spec (`RUN_DIR,key=value`).
DEMO = {
    "fast": {
        "runs": "runs-fast",
        "train_sets": (
            "dim_mults=1,2",
            "lr=1e-3",
            "n_epochs=3",
            "steps_per_epoch=200",
            "ckpt_every=200",
        ),
        "describe": "demo preset, 600 steps, 2-level U-Net",
        "planner": ",steps=3",
        "frames": 200,
    },
    "full": {
        "runs": "runs",
        "train_sets": (),
        "describe": "demo preset, 2,500 steps",
        "planner": "",
        "frames": 300,
    },
}
# Upper bounds: every held-out seed is one more network stepped at once in every scenario and
# RF condition (about 32 KiB each), and every network-frame one more float of delay trace.
MAX_SEEDS = 1000
MAX_FRAMES = 1_000_000  # 5,000 s of network time
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
        "every run: device, threads, weights; README.md explains them; macdmp:RUN_DIR also "
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
    p.add_argument("--plots", metavar="DIR", help="write qos.png and delay.png here (made)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_evaluate)

    d = sub.add_parser(
        "demo",
        help="the whole pipeline at demo scale: collect, train MA-CDMP (+ w/o MF), evaluate",
        description="Collect the demo dataset, train MA-CDMP and MA-CDMP w/o MF on it, evaluate "
        "both against every allocator on held-out networks (ideal and limited RF), print the "
        "table and write results.json, qos.png and delay.png. The default is sized for a few "
        "minutes on a 2-core CPU; --full runs the longer demo. Re-running reuses the dataset "
        "and resumes or reuses the trained runs.",
    )
    d.add_argument("--out", default="demo-out", help="working folder (default demo-out/)")
    d.add_argument(
        "--full",
        action="store_true",
        help="the longer demo: the `demo` training preset as is (2,500 steps), 10 solver "
        "steps, 300-frame episodes; its runs go to OUT/runs/ (the default's to OUT/runs-fast/)",
    )
    d.add_argument(
        "--frames",
        type=int,
        default=None,
        help=f"evaluation frames per episode (default {DEMO['fast']['frames']}; "
        f"{DEMO['full']['frames']} with --full)",
    )
    d.add_argument(
        "--seeds", type=int, default=EVAL_SEEDS, help=f"held-out seeds (default {EVAL_SEEDS})"
    )
    d.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for training (default 1: robust when another process shares the "
        "cores; 2 can be faster on an idle 2-core machine). Planning always uses 1",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)

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
        help="map scenario families instead (docs/families.md): every deployable allocator, "
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


def _split_rfs(text: str) -> list[str]:
    rfs = [r for r in text.split(",") if r]
    bad = [r for r in rfs if r not in RF_MODES]
    if bad or not rfs:
        raise ValueError(f"--rf: {bad or text!r} not allowed; use a comma list of {RF_MODES}")
    return rfs


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name}: must be >= {low} (got {value})")


def _check_size(seeds: int, frames: int, groups: int) -> None:
    """--seeds and --frames in range, and not more network-frames than memory holds."""
    _at_least("--frames", frames, 1)
    _at_least("--seeds", seeds, 1)
    if seeds > MAX_SEEDS:
        raise ValueError(
            f"--seeds: at most {MAX_SEEDS:,} (got {seeds:,}); every seed is one more network "
            "stepped at once in every scenario and RF condition"
        )
    if frames > MAX_FRAMES:
        raise ValueError(f"--frames: at most {MAX_FRAMES:,} (got {frames:,})")
    if seeds * frames * groups > MAX_NETWORK_FRAMES:
        raise ValueError(
            f"--seeds x --frames: {seeds:,} seeds x {frames:,} frames x {groups} scenario/RF "
            f"pairs is {seeds * frames * groups:,} network-frames, above the limit of "
            f"{MAX_NETWORK_FRAMES:,} (8 bytes of delay trace each); lower --seeds or --frames"
        )


def _split_scenarios(text: str) -> list[str]:
    from macdmp.sim.config import load_scenario

    scenarios = [s for s in text.split(",") if s]
    if not scenarios:
        raise ValueError(f"--scenarios: give a comma list of scenarios (got {text!r})")
    for s in scenarios:
        try:
            load_scenario(s)
        except ValueError as exc:
            raise option_error("--scenarios", exc) from None
    return scenarios


@stop_at_safe_points()  # SIGINT/SIGTERM stop at the next frame; nothing is written then
def _evaluate(args: argparse.Namespace) -> int:
    from .episodes import format_table
    from .evaluate import evaluate

    _at_least("--seed-offset", args.seed_offset, 0)
    scenarios = _split_scenarios(args.scenarios)
    rfs = _split_rfs(args.rf)
    _check_size(args.seeds, args.frames, len(scenarios) * len(rfs))
    _check_out_file("--json", args.json, force=args.force)
    _check_out_dir("--plots", args.plots)
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
        _write_json(Path(args.json), result)
        print(f"results written to {args.json}")
    if args.plots:
        _plots(result, Path(args.plots))
        print(f"plots written to {args.plots}/")
    return 0


@stop_at_safe_points()  # each stage stops at its safe points; the exit status is 130
def _demo(args: argparse.Namespace) -> int:
    import torch

    from macdmp.cli import main as macdmp
    from macdmp.planner.models import STEER_CHANGES

    from .episodes import format_table
    from .evaluate import evaluate

    size = DEMO["full" if args.full else "fast"]
    frames = size["frames"] if args.frames is None else args.frames
    _check_size(args.seeds, frames, len(PAPER_SCENARIOS) * len(RF_MODES))
    _at_least("--threads", args.threads, 1)
    torch.set_num_threads(args.threads)
    out = check_output_dir("--out", args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demo.h5"
    quiet = ["--quiet"] if args.quiet else []
    # `macdmp train` draws its bar at every step; in a log file that is thousands of updates
    train_quiet = quiet if sys.stderr.isatty() else ["--quiet"]
    t_start = time.perf_counter()

    def stage(text: str) -> None:
        print(f"\n== [{time.perf_counter() - t_start:5.0f} s] {text}", flush=True)

    stage("1/5 collect the demo dataset with the behaviour policy")
    if data.exists():
        rc = macdmp(["dataset", "validate", str(data)])
        if rc != 0:
            raise RuntimeError(f"{data} exists but does not validate; delete it and rerun")
        print(f"{data} exists and validates; reusing it")
    elif (rc := macdmp(["collect", "--preset", "demo", "--out", str(data), *quiet])) != 0:
        return rc  # 130 when stopped by a signal
    folder = out / size["runs"]
    # label -> (run folder, what differs from the `demo` preset besides the size's settings)
    runs = {
        "MA-CDMP": (folder / "macdmp", []),
        "MA-CDMP w/o MF": (folder / "macdmp-nomf", ["--no-mf"]),
        # the `paper-steer` preset's changes at the demo's size
        "MA-CDMP steer": (
            folder / "macdmp-steer",
            [f"--set={k}={v}" for k, v in STEER_CHANGES.items()],
        ),
    }
    sets = [f"--set={kv}" for kv in size["train_sets"]]
    for k, (label, (run, extra)) in enumerate(runs.items()):
        stage(f"{2 + k}/5 train {label} ({size['describe']}; resumes if interrupted)")
        cmd = ["train", "--data", str(data), "--out", str(run), "--preset", "demo", *sets, *extra]
        if (rc := macdmp([*cmd, *train_quiet])) != 0:
            return rc
    stage(
        f"5/5 evaluate on held-out networks: {len(PAPER_SCENARIOS)} scenarios x "
        f"{args.seeds} seeds x {frames} frames, ideal and limited RF"
    )
    opts = size["planner"]
    planners = [f"{run}{opts}" for run, _ in runs.values()]
    result = evaluate(
        [*planners, *ALLOCATOR_SET],
        PAPER_SCENARIOS,
        RF_MODES,
        n_seeds=args.seeds,
        frames=frames,
        progress=not args.quiet,
    )
    print(format_table(result["rows"], TABLE_COLUMNS))
    _write_json(out / "results.json", result)
    _plots(result, out)
    stage(f"done: {out}/results.json, {out}/qos.png, {out}/delay.png")
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
    _check_out_file("--out", str(rows_out) if rows_out else None, force=args.force)
    _check_out_file("--plot", args.plot, force=args.force)
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


def _check_out_file(option: str, path: str | None, force: bool = False) -> None:
    """Output files may be in folders that do not exist yet (they are made), not in files;
    an existing file needs ``force``; never a device node (``macdmp.outputs``)."""
    if path is not None:
        check_output_file(option, path, force=force)


def _check_out_dir(option: str, path: str | None) -> None:
    if path is not None:
        check_output_dir(option, path)


def _write_json(path: Path, result: dict) -> None:
    text = json.dumps(result, indent=1, default=float)
    # lists of plain numbers (the per-frame traces) on one line each, not one number per line
    text = re.sub(
        r"\[\s+([-+0-9.eE,\snulNaIfity]+?)\s+\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    atomic_write_text(path, text)


def _plots(result: dict, folder: Path) -> None:
    with disk_errors_named(folder):
        _draw(result, folder)


def _draw(result: dict, folder: Path) -> None:
    from .plots import plot_delay_panels, plot_qos_bars

    folder.mkdir(parents=True, exist_ok=True)
    n_seeds, n_scen = len(result["seeds"]), len(result["scenarios"])
    plot_qos_bars(
        result["rows"],
        folder / "qos.png",
        f"QoS on held-out networks ({n_scen} scenarios, {result['frames']}-frame episodes)",
        caption=f"Bars: mean over {n_seeds} held-out network seeds of the average over the "
        f"{n_scen} scenarios; error bars: ± 1 standard deviation over the seeds. Methods best "
        "first (average reward, ideal RF).",
    )
    plot_delay_panels(result["frame_delay_ms"], folder / "delay.png", n_seeds)


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    check_output_dir("--out", args.out)
    path = write_report(args.json, args.losses, args.out, args.title)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


@stop_at_safe_points()  # SIGINT/SIGTERM stop at the next frame; nothing is written then
def _sim_study(args: argparse.Namespace) -> int:
    from macdmp.sim.config import load_scenario

    from .sim_study import allocator_table, load_sweep, markdown

    _check_size(args.seeds, args.frames, 1)
    try:
        load_scenario(args.sweep_scenario)
    except ValueError as exc:
        raise option_error("--sweep-scenario", exc) from None
    _check_out_file("--out", args.out, force=args.force)
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
