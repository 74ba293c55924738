"""Where one training step's GPU time goes, by CUDA stream: with ``streams=true`` the noise
model, the return model and the inverse dynamics of MA-CDMP each run (forward and backward) on a
stream of their own (macdmp.methods.branches), so the kernels of each stream are that part's;
the first stream of a step holds the rest (the batch's gather, the loss's combination, the
clipping, Adam and the EMA update).

    python benchmarks/step_profile.py [--preset paper] [--steps 20] [--compile] [--top N]
        [--stacked K] [--norm native|rows] [--update tensors|flat] [--set K=V]

Eager steps (after warm-up) under torch.profiler; prints per stream the kernels and the kernel
time per step, and the step's wall time; with ``--top N`` also each stream's N kernels of most
time, by name. With ``--stacked K`` the step is that of K runs (seeds 0..K-1) stacked as one
model (macdmp.methods.stacked; ``--norm`` how its group norms are computed, ``--update`` its
update after the backward, each the stacked trainer's default unless given). The captured
step replays the same kernels without the Python between them, so the longest stream plus the
first bounds its time from below.
CUDA only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from macdmp.methods import Trainer, make_config
from macdmp.methods.config import parse_sets
from macdmp.methods.stacked import DEFAULT_NORM, NORMS, UPDATES, StackedTrainer
from macdmp.planner.synthetic import SyntheticWindows

PARTS = ("first stream: batch, combination, clipping, Adam, EMA", "noise model", "return model",
         "inverse dynamics")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--steps", type=int, default=20, help="profiled steps (default 20)")
    ap.add_argument("--compile", action="store_true", help="compile the backbones first")
    ap.add_argument("--top", type=int, default=0, help="per stream, the N kernels of most time")
    ap.add_argument(
        "--stacked",
        type=int,
        default=0,
        metavar="K",
        help="profile the step of K runs stacked as one model (default: one run)",
    )
    ap.add_argument(
        "--norm",
        choices=NORMS,
        default=DEFAULT_NORM,
        help=f"with --stacked: how group norms are computed (default {DEFAULT_NORM})",
    )
    ap.add_argument(
        "--update",
        choices=UPDATES,
        default=None,
        help="with --stacked: the update after the backward (default: flat, or tensors where "
        "--set flat=false)",
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    if a.steps < 1:
        raise SystemExit(f"--steps: must be >= 1 (got {a.steps})")
    if a.stacked < 0:
        raise SystemExit(f"--stacked: must be >= 0 (got {a.stacked})")
    if a.stacked and a.compile:
        raise SystemExit("--compile: one run's backbones only; not with --stacked")
    if a.top < 0:
        raise SystemExit(f"--top: must be >= 0 (got {a.top})")
    try:  # a bad preset or --set is refused by name before any GPU work
        over = parse_sets("ma-cdmp", a.set)
        if over.get("streams") is False:
            raise ValueError("streams: the profile groups kernels by stream; it needs true")
        cfg = make_config("ma-cdmp", a.preset, max_steps=10**9, **{**over, "streams": True})
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not torch.cuda.is_available():
        raise SystemExit("step_profile: needs a CUDA device")
    data = SyntheticWindows(cfg.horizon, cfg.gamma, reward=cfg.reward)
    with tempfile.TemporaryDirectory() as root:
        runs = [
            Trainer("ma-cdmp", cfg.replace(seed=s), data, f"{root}/run{s}", "cuda",
                    capture=False, compile=a.compile)
            for s in range(max(a.stacked, 1))
        ]  # fmt: skip
        if a.stacked:
            tr = StackedTrainer(runs, norm=a.norm, update=a.update)
            a.update = tr.update
        else:
            (tr,) = runs
            tr.method.train()
        tr.prepare()
        for _ in range(5):
            tr.train_step()
        torch.cuda.synchronize()
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        walls = []
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(a.steps):
                t0 = time.perf_counter()
                tr.train_step()
                torch.cuda.synchronize()
                walls.append(time.perf_counter() - t0)
        trace = Path(root) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
        tr.close()
        if a.stacked:
            for run in runs:
                run.close()
    kernels = [e for e in events if e.get("cat") == "kernel"]
    first: dict[int, float] = {}
    time_us: dict[int, float] = defaultdict(float)
    count: dict[int, int] = defaultdict(int)
    by_name: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for e in kernels:
        s = e["args"]["stream"]
        first[s] = min(first.get(s, e["ts"]), e["ts"])
        time_us[s] += e["dur"]
        count[s] += 1
        row = by_name[s][e["name"][:90]]
        row[0] += 1
        row[1] += e["dur"]
    order = sorted(first, key=first.get)  # the first stream of a step starts first
    what = f", {a.stacked} runs stacked (norm={a.norm}, update={a.update})" if a.stacked else ""
    print(
        f"ma-cdmp {a.preset} preset{' compiled' if a.compile else ''}{what}, "
        f"batch {cfg.batch_size}, "
        f"streams=true; {torch.cuda.get_device_name()}; torch {torch.__version__}; "
        f"{a.steps} eager steps under torch.profiler"
    )
    print("\n| stream | part | kernels per step | kernel time per step (ms) |")
    print("|---|---|---|---|")
    for i, s in enumerate(order):
        part = PARTS[i] if i < len(PARTS) else "other"
        print(f"| {i} | {part} | {count[s] / a.steps:.0f} | {time_us[s] / a.steps / 1000:.2f} |")
    total = sum(time_us.values()) / a.steps / 1000
    n = sum(count.values()) / a.steps
    print(f"| all | | {n:.0f} | {total:.2f} |")
    print(f"\neager step wall time (median, profiled): {statistics.median(walls) * 1000:.2f} ms")
    for i, s in enumerate(order if a.top else []):
        part = PARTS[i] if i < len(PARTS) else "other"
        print(f"\nstream {i} ({part}): the {a.top} kernels of most time, per step")
        print("\n| kernel | count | time (ms) |\n|---|---|---|")
        top = sorted(by_name[s].items(), key=lambda kv: -kv[1][1])[: a.top]
        for name, (c, us) in top:
            print(f"| `{name}` | {c / a.steps:.0f} | {us / a.steps / 1000:.3f} |")


if __name__ == "__main__":
    main()
