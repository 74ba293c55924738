"""Training throughput of MA-CDMP's joint step (Eq. 19) at the paper batch size.

    python benchmarks/train_speed.py [--preset paper|demo] [--quick] [--device DEV]

Prints median steps/s over repeated timing windows and the projected time for the preset's
run; with the paper preset, compares against the target (100,000 steps in 15 minutes on a GPU).
Data are synthetic windows with the real shapes (the step's cost does not depend on content).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from macdmp.planner import Trainer, make_config, pick_device
from macdmp.planner.synthetic import SyntheticWindows

TARGET_STEPS, TARGET_S = 100_000, 15 * 60


def measure(preset: str, device: str | None, warmup: int, window: int, repeats: int) -> dict:
    cfg = make_config(preset)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    with tempfile.TemporaryDirectory() as run:
        tr = Trainer(cfg, data, run, device)
        tr.models.train()
        for _ in range(warmup):
            tr.train_step()
        rates = []
        for _ in range(repeats):
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(window):
                tr.train_step()  # float(loss) in train_step synchronises each step
            rates.append(window / (time.perf_counter() - t0))
    return {"device": str(tr.device), "cfg": cfg, "rate": statistics.median(rates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=["paper", "demo"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="few steps (a CPU smoke run)")
    a = ap.parse_args()
    warmup, window, repeats = (3, 5, 3) if a.quick else (20, 50, 5)
    r = measure(a.preset, a.device, warmup, window, repeats)
    cfg = r["cfg"]
    print(
        f"| preset | device | batch | H | K | width | steps/s (median of {repeats}) "
        f"| time for {cfg.total_steps:,} steps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    proj = cfg.total_steps / r["rate"]
    print(
        f"| {a.preset} | {r['device']} | {cfg.batch_size} | {cfg.horizon} | "
        f"{cfg.n_diffusion_steps} | {cfg.dim} | {r['rate']:.1f} | {proj / 60:.1f} min |"
    )
    if a.preset == "paper":
        need = TARGET_STEPS / TARGET_S
        on_gpu = pick_device(a.device).type == "cuda"
        verdict = "met" if r["rate"] >= need else f"missed by {need / r['rate']:.1f}x"
        where = "" if on_gpu else " (target is for one H100; this is not a GPU run)"
        print(f"\ntarget: {need:.1f} steps/s (100,000 steps in 15 min): {verdict}{where}")


if __name__ == "__main__":
    main()
