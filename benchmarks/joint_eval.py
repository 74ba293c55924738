"""The in-loop validation of a stacked group: K runs one at a time against the K runs jointly
(one planning call per frame for all their agents, macdmp.methods.joint).

    python benchmarks/joint_eval.py [--preset paper] [--family load100] [--runs 1,3,8]
        [--seeds 2] [--frames 200] [--repeats 3] [--device cuda] [--out FILE.md]

Untrained models of the preset's architecture (the time of a frame does not depend on the
weights; each run its own random weights), on the family's validation networks (its scenarios x
``--seeds`` validation seeds, as the bench's in-loop validation), ``--frames`` frames, the
planner's defaults (MA-CDMP's own actor options). For each K: the K runs' validations one after
the other (``Trainer.evaluate``'s call, ``run_groups`` per run) and jointly (one ``run_groups``
over the K runs' networks); median over ``--repeats`` after one warm-up (which captures the CUDA
graphs). Prints a table: seconds per validation of all K runs, ms per frame per run, and the
joint speed-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import torch

from macdmp.methods import pick_device
from macdmp.methods.joint import JointModel
from macdmp.methods.policy import ActorPolicy
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows
from macdmp.policies.episodes import run_groups
from macdmp.sim.config import load_scenario
from macdmp.sim.families import FAMILIES
from macdmp.sim.seeds import validation_seeds


def build(preset: str, k: int, device: torch.device) -> list[PlannerModels]:
    cfg = make_config(preset)
    data = SyntheticWindows(cfg.horizon, seed=0)  # one set of statistics, as one dataset
    out = []
    for i in range(k):
        torch.manual_seed(i)
        out.append(PlannerModels(cfg, data.stats, rbs=data.rbs).to(device).eval())
    return out


def one_at_a_time(ms, groups, rbs: float, frames: int) -> None:
    """Trainer.evaluate's call for each run in turn."""
    for m in ms:
        run_groups(groups, ActorPolicy(m.make_actor(seed=0), m.name, rbs), frames)


def jointly(joint: JointModel, ms, groups, rbs: float, frames: int) -> None:
    """evaluate_jointly's call: the K runs' networks side by side, one policy."""
    policy = ActorPolicy(joint.model.make_actor(seed=0), ms[0].name, rbs)
    run_groups(groups * len(ms), policy, frames)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: CUDA graphs captured
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--family", default="load100", choices=sorted(FAMILIES))
    ap.add_argument("--runs", default="1,3,8")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    runs = [int(v) for v in args.runs.split(",")]
    if any(k < 1 for k in runs):
        raise SystemExit(f"--runs: every K must be >= 1 (got {args.runs})")
    scenarios = [load_scenario(n) for n in FAMILIES[args.family].scenarios]
    seeds = validation_seeds(args.seeds)
    rbs = float(scenarios[0].rbs)
    lines = [
        f"# Joint validation, {args.preset} preset, `{args.family}` ({len(scenarios)} scenarios "
        f"x {args.seeds} validation seeds x {args.frames} frames)",
        "",
        f"Machine: {torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}; torch {torch.__version__}; "  # noqa: E501
        f"median of {args.repeats} after one warm-up.",
        "",
        "| K runs | one at a time (s) | jointly (s) | ms/frame/run, one at a time | "
        "ms/frame/run, jointly | speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    for k in runs:
        ms = build(args.preset, k, device)
        for m in ms:  # the data's rbs: the simulator's
            m.rbs = rbs
        groups = [(c, seeds) for c in scenarios]
        joint = JointModel(ms)
        t_alone = timed(partial(one_at_a_time, ms, groups, rbs, args.frames), args.repeats)
        t_joint = timed(partial(jointly, joint, ms, groups, rbs, args.frames), args.repeats)
        per = 1000.0 / (args.frames * k)
        row = (
            f"| {k} | {t_alone:.2f} | {t_joint:.2f} | {t_alone * per:.2f} | "
            f"{t_joint * per:.2f} | {t_alone / t_joint:.2f}x |"
        )
        lines.append(row)
        print(row, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
