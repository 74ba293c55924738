"""``macdmp demo``: the whole pipeline at a small size, through the library's Python API.

Collect the demo dataset, train MA-CDMP, its w/o MF twin and its ``paper-steer`` variant on it,
evaluate them beside every allocator on held-out networks (ideal and limited RF), print the
table and write ``results.json``, ``qos.png`` and ``delay.png``. Re-running reuses the dataset
and resumes or reuses the trained runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from macdmp.app.options import at_least, check_size
from macdmp.common.outputs import check_output_dir, disk_errors_named
from macdmp.common.signals import stop_at_safe_points
from macdmp.data.collect import COLLECT_PRESETS, CollectSettings, collect
from macdmp.data.format import validate
from macdmp.eval.evaluate import evaluate, write_result_json
from macdmp.eval.plots import plot_result
from macdmp.methods.config import build_config
from macdmp.methods.trainer import TrainingInterrupted, open_trainers, train_packed
from macdmp.planner.models import STEER_CHANGES
from macdmp.policies.episodes import format_table
from macdmp.sim.config import PAPER_SCENARIOS, RF_MODES
from macdmp.sim.seeds import EVAL_SEEDS

from .evaluate import ALLOCATOR_SET, TABLE_COLUMNS

# What the demo runs. "fast" (the default) fits a few minutes on a 2-core CPU; "full" is the
# `demo` training preset unchanged. train_sets override fields of the `demo` preset; planner
# is appended to the run folder's policy spec (`RUN_DIR,key=value`).
DEMO = {
    "fast": {
        "runs": "runs-fast",
        "train_sets": {
            "dim_mults": (1, 2),
            "lr": 1e-3,
            "n_epochs": 3,
            "steps_per_epoch": 200,
            "ckpt_every": 200,
        },
        "describe": "demo preset, 600 steps, 2-level U-Net",
        "planner": ",steps=3",
        "frames": 200,
    },
    "full": {
        "runs": "runs",
        "train_sets": {},
        "describe": "demo preset, 2,500 steps",
        "planner": "",
        "frames": 300,
    },
}


def register(sub: argparse._SubParsersAction) -> None:
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
    d.set_defaults(func=run_demo)


@stop_at_safe_points()  # each stage stops at its safe points; the exit status is 130
def run_demo(args: argparse.Namespace) -> int:
    size = DEMO["full" if args.full else "fast"]
    frames = size["frames"] if args.frames is None else args.frames
    check_size(args.seeds, frames, len(PAPER_SCENARIOS) * len(RF_MODES))
    at_least("--threads", args.threads, 1)
    torch.set_num_threads(args.threads)
    out = check_output_dir("--out", args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demo.h5"
    show = not args.quiet
    # training draws its bar at every step; in a log file that is thousands of updates
    show_training = show and sys.stderr.isatty()
    t_start = time.perf_counter()

    def stage(text: str) -> None:
        print(f"\n== [{time.perf_counter() - t_start:5.0f} s] {text}", flush=True)

    stage("1/5 collect the demo dataset with the behaviour policy")
    if data.exists():
        try:
            validate(data)
        except ValueError as exc:
            raise RuntimeError(f"{data} exists but does not validate ({exc}); delete it") from None
        print(f"{data} exists and validates; reusing it")
    else:
        preset = COLLECT_PRESETS["demo"]
        settings = CollectSettings(
            out=str(data),
            scenarios=list(preset.scenarios),
            trajectories=preset.trajectories,
            frames=preset.frames,
        )
        res = collect(settings, progress=show)
        print(f"wrote {res.path}: {settings.trajectories} trajectories x {settings.frames} frames")
    folder = out / size["runs"]
    # label -> (run folder, what differs from the `demo` preset besides the size's settings,
    # whether it is the w/o MF twin)
    runs = {
        "MA-CDMP": (folder / "macdmp", {}, False),
        "MA-CDMP w/o MF": (folder / "macdmp-nomf", {}, True),
        # the `paper-steer` preset's changes at the demo's size
        "MA-CDMP steer": (folder / "macdmp-steer", dict(STEER_CHANGES), False),
    }
    for k, (label, (run, extra, no_mf)) in enumerate(runs.items()):
        stage(f"{2 + k}/5 train {label} ({size['describe']}; resumes if interrupted)")
        cfg = build_config("ma-cdmp", "demo", no_mf, sets={**size["train_sets"], **extra})
        (tr,) = open_trainers([("ma-cdmp", cfg, data, run)])
        state = f"resuming at step {tr.step}" if tr.step else "new"
        print(f"{run}: {tr.cfg.total_steps} steps, {state}", file=sys.stderr)
        try:
            with disk_errors_named(run):
                train_packed([tr], progress=show_training)
        except TrainingInterrupted as exc:
            print(f"\ninterrupted ({exc})", file=sys.stderr)
            return 130
        finally:
            tr.close()
    stage(
        f"5/5 evaluate on held-out networks: {len(PAPER_SCENARIOS)} scenarios x "
        f"{args.seeds} seeds x {frames} frames, ideal and limited RF"
    )
    planners = [f"{run}{size['planner']}" for run, _, _ in runs.values()]
    result = evaluate(
        [*planners, *ALLOCATOR_SET],
        PAPER_SCENARIOS,
        RF_MODES,
        n_seeds=args.seeds,
        frames=frames,
        progress=show,
    )
    print(format_table(result["rows"], TABLE_COLUMNS))
    write_result_json(out / "results.json", result)
    plot_result(result, out)
    stage(f"done: {out}/results.json, {out}/qos.png, {out}/delay.png")
    return 0
