"""Floating-point work of one frame's decision, per diffusion method (paper presets).

    python benchmarks/decision_flops.py [--agents 102] [--candidates 8,64]

Counts the FLOPs of one backbone call per sequence (torch.utils.flop_counter, on the CPU) and
multiplies by the calls a frame makes for ``--agents`` agents (102: one RF condition of the
paper's protocol, 4 scenarios x 3 seeds): MA-CDMP and MA-DD at DPM-Solver 10 steps (MA-CDMP: a
guided step is the noise model plus the classifier forward and backward, ~3 forwards; MA-DD and
MADiff: conditional and unconditional halves, 2 calls), MA-Diffuser at DDPM over all K steps
with value guidance, per candidate plan, plus the final ranking. Budgeting help for GPU time:
seconds per 1,000 frames are printed at an assumed sustained rate (--tflops, default 20).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from macdmp.methods.base import get_method, make_config
from macdmp.planner.synthetic import SyntheticWindows


def flops(fn, *args) -> int:
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        fn(*args)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=102)
    ap.add_argument("--candidates", default="8,64", help="MA-Diffuser plans per agent")
    ap.add_argument("--tflops", type=float, default=20.0, help="assumed sustained TFLOP/s")
    a = ap.parse_args()
    torch.set_num_threads(1)
    k0 = torch.zeros(1, dtype=torch.long)
    c, keep = torch.zeros(1, 1), torch.ones(1)
    rows = []
    for name in ("ma-cdmp", "ma-dd", "madiff", "ma-diffuser"):
        cfg = make_config(name, "paper")
        stats = SyntheticWindows(cfg.horizon, cfg.gamma).stats
        m = get_method(name)(cfg, stats, 40.0).eval()
        h = cfg.horizon
        if name == "ma-cdmp":
            x = torch.randn(1, h, cfg.channels)
            e, v = flops(m.eps, x, k0), flops(m.classifier, x, k0)
            rows.append((name, "dpm2 10, guided", e, v, a.agents * 10 * (e + 3 * v)))
        elif name == "ma-dd":
            x = torch.randn(1, h, 4)
            e = flops(m.eps, x, k0, c, keep)
            rows.append((name, "dpm2 10, CFG", e, 0, a.agents * 10 * 2 * e))
        elif name == "madiff":
            x, mask = torch.randn(1, 9, h, 4), torch.ones(1, 9)
            e = flops(m.eps, x, k0, mask, c, keep)
            rows.append((name, "dpm2 10, CFG, 9 agents", e, 0, a.agents * 10 * 2 * e))
        else:
            x = torch.randn(1, h, 5)
            e, v = flops(m.eps, x, k0), flops(m.value, x, k0)
            k = cfg.n_diffusion_steps
            for n in (int(s) for s in a.candidates.split(",")):
                work = a.agents * n * (k * (e + 3 * v) + v)
                rows.append((name, f"ddpm {k}, guided, {n} candidates", e, v, work))
    print(f"{a.agents} agents per frame; paper presets; FLOPs per sequence from "
          f"torch.utils.flop_counter; time at {a.tflops:g} TFLOP/s sustained\n")  # fmt: skip
    print("| method | sampling | noise model MFLOP/seq | value MFLOP/seq | TFLOP per frame "
          "| s per 1,000 frames |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, how, e, v, work in rows:
        print(f"| {name} | {how} | {e / 1e6:.1f} | {v / 1e6:.1f} | {work / 1e12:.3f} "
              f"| {work * 1000 / (a.tflops * 1e12):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
