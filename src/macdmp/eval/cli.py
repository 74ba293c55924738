"""`macdmp evaluate`, `macdmp demo` and `macdmp sim-study`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from macdmp.eval.protocol import EVAL_FRAMES, EVAL_SEEDS
from macdmp.sim.config import PAPER_SCENARIOS, RF_MODES

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
        help="an allocator name, behaviour[:SIGMA], static:D,... or macdmp:RUN_DIR[,key=value...]"
        " (repeat for several)",
    )
    p.add_argument("--scenarios", default=",".join(PAPER_SCENARIOS), help="comma-separated")
    p.add_argument("--seeds", type=int, default=EVAL_SEEDS, help="held-out seeds (default 3)")
    p.add_argument("--seed-offset", type=int, default=0, help="first evaluation seed offset")
    p.add_argument("--rf", default="ideal,limited", help="comma-separated: ideal,limited")
    p.add_argument("--frames", type=int, default=EVAL_FRAMES, help="frames per episode (1000)")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    p.add_argument("--plots", metavar="DIR", help="write QoS bars and a delay trace here")
    p.set_defaults(func=_evaluate)

    d = sub.add_parser(
        "demo",
        help="the whole pipeline at demo scale: collect, train MA-CDMP (+ w/o MF), evaluate",
    )
    d.add_argument("--out", default="demo-out", help="working folder (default demo-out/)")
    d.add_argument("--frames", type=int, default=300, help="evaluation frames per episode")
    d.add_argument("--seeds", type=int, default=EVAL_SEEDS)
    d.set_defaults(func=_demo)

    r = sub.add_parser(
        "report",
        help="merge `evaluate --json` files into a markdown report with tables and plots",
    )
    r.add_argument("--json", nargs="+", required=True, help="result files of macdmp evaluate")
    r.add_argument("--losses", nargs="*", default=[], help="losses.jsonl files of training runs")
    r.add_argument("--out", required=True, help="folder for report.md, qos.png, training.png")
    r.add_argument("--title", default="Results")
    r.set_defaults(func=_report)

    s = sub.add_parser(
        "sim-study",
        help="validation study of the simulator: every allocator, every scenario, a load sweep",
    )
    s.add_argument("--frames", type=int, default=1000)
    s.add_argument("--seeds", type=int, default=3, help="evaluation seeds per cell")
    s.add_argument("--sweep-scenario", default="n9-2to7")
    s.add_argument("--out", help="write the markdown tables here (default: print)")
    s.set_defaults(func=_sim_study)


def _split_rfs(text: str) -> list[str]:
    rfs = [r for r in text.split(",") if r]
    bad = [r for r in rfs if r not in RF_MODES]
    if bad or not rfs:
        raise ValueError(f"--rf: {bad or text!r} not allowed; use a comma list of {RF_MODES}")
    return rfs


def _evaluate(args: argparse.Namespace) -> int:
    from .episodes import format_table
    from .evaluate import evaluate

    if args.frames < 1 or args.seeds < 1:
        raise ValueError("--frames and --seeds: must be >= 1")
    scenarios = [s for s in args.scenarios.split(",") if s]
    result = evaluate(
        args.policy,
        scenarios,
        _split_rfs(args.rf),
        n_seeds=args.seeds,
        frames=args.frames,
        seed_offset=args.seed_offset,
    )
    print(format_table(result["rows"], TABLE_COLUMNS))
    print(
        f"{args.seeds} held-out seeds x {len(scenarios)} scenarios x {args.frames} frames; "
        "act_ms_per_frame: wall time of one decision for all agents of all networks stepped "
        "together"
    )
    if args.json:
        _write_json(Path(args.json), result)
        print(f"results written to {args.json}")
    if args.plots:
        _plots(result, Path(args.plots))
        print(f"plots written to {args.plots}/")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from macdmp.cli import main as macdmp

    from .episodes import format_table
    from .evaluate import evaluate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demo.h5"
    t_start = time.perf_counter()

    def stage(text: str) -> None:
        print(f"\n== [{time.perf_counter() - t_start:5.0f} s] {text}", flush=True)

    stage("1/4 collect the demo dataset with the behaviour policy")
    if data.exists():
        rc = macdmp(["dataset", "validate", str(data)])
        if rc != 0:
            raise RuntimeError(f"{data} exists but does not validate; delete it and rerun")
        print(f"{data} exists and validates; reusing it")
    elif macdmp(["collect", "--preset", "demo", "--out", str(data)]) != 0:
        return 1
    runs = {"MA-CDMP": out / "runs" / "macdmp", "MA-CDMP w/o MF": out / "runs" / "macdmp-nomf"}
    for k, (label, run) in enumerate(runs.items()):
        stage(f"{2 + k}/4 train {label} (demo preset; resumes if interrupted)")
        cmd = ["train", "--data", str(data), "--out", str(run), "--preset", "demo"]
        if "w/o MF" in label:
            cmd.append("--no-mf")
        if macdmp(cmd) != 0:
            return 1
    stage("4/4 evaluate on held-out networks: 4 scenarios x ideal/limited RF")
    policies = [f"macdmp:{runs['MA-CDMP']}", f"macdmp:{runs['MA-CDMP w/o MF']}", *ALLOCATOR_SET]
    result = evaluate(policies, PAPER_SCENARIOS, RF_MODES, n_seeds=args.seeds, frames=args.frames)
    print(format_table(result["rows"], TABLE_COLUMNS))
    _write_json(out / "results.json", result)
    _plots(result, out)
    stage(f"done: {out}/results.json, {out}/qos.png, {out}/delay.png")
    return 0


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, path)


def _plots(result: dict, folder: Path) -> None:
    import numpy as np

    from .plots import plot_delay_traces, plot_qos_bars

    folder.mkdir(parents=True, exist_ok=True)
    plot_qos_bars(result["rows"], folder / "qos.png", "QoS on held-out networks")
    traces = {k: np.asarray(v, dtype=float) for k, v in result["delay_traces"].items()}
    first = result["per_scenario"][0]
    plot_delay_traces(
        traces, folder / "delay.png", f"per-frame delay, {first['scenario']} {first['rf']} RF"
    )


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.json, args.losses, args.out, args.title)
    print(path.read_text())
    print(f"report written to {path}")
    return 0


def _sim_study(args: argparse.Namespace) -> int:
    from .sim_study import allocator_table, load_sweep, markdown

    table = allocator_table(n_seeds=args.seeds, frames=args.frames)
    sweep = load_sweep(scenario=args.sweep_scenario, n_seeds=args.seeds, frames=args.frames)
    text = markdown(table, sweep, "macdmp " + " ".join(sys.argv[1:]))
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
