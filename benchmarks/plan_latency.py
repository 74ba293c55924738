"""Time to plan one frame for every agent at once (one batched diffusion run), MA-CDMP.

    python benchmarks/plan_latency.py [--quick] [--device DEV] [--preset paper|demo]

Models are untrained (latency does not depend on the weights) with the preset's architecture.
Rows: DDPM with all K steps and DPM-Solver (2nd-order multistep) with 10 and 5 steps, for 9 and
100 agents, guidance on (one classifier gradient per step) and one candidate per agent. Prints
medians; the target is one frame's plans within the 5 ms frame on a GPU with <= 10 solver steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from macdmp.methods import pick_device
from macdmp.planner import PlannerModels, make_config, plan
from macdmp.planner.synthetic import SyntheticWindows

FRAME_MS = 5.0


def time_plan(
    models,
    agents: int,
    solver: str,
    steps: int | None,
    repeats: int,
    guidance: float,
    graph: bool | None = None,
) -> float:
    rng = np.random.default_rng(0)
    obs = rng.normal(20, 5, (agents, 4)).astype(np.float32)
    gen = torch.Generator(device=models.normalizer.obs_mean.device).manual_seed(0)
    cuda = models.normalizer.obs_mean.is_cuda
    plan(models, obs, obs, solver, steps, guidance, 1, gen, cuda_graph=graph)  # warm-up
    ts = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        plan(models, obs, obs, solver, steps, guidance, 1, gen, cuda_graph=graph)  # synchronised
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=["paper", "demo"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--guidance", type=float, default=0.1)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a CPU smoke run)")
    a = ap.parse_args()
    device = pick_device(a.device)
    cfg = make_config(a.preset)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    models = PlannerModels(cfg, data.stats, data.rbs).to(device).eval().requires_grad_(False)
    repeats = 3 if a.quick else 15
    k = cfg.n_diffusion_steps
    cases = [("ddpm", None), ("dpm2", 10), ("dpm2", 5)]
    print(
        f"preset {a.preset} (H={cfg.horizon}, K={k}, width {cfg.dim}), device {device}, "
        f"guidance {a.guidance}, median of {repeats}"
    )
    # on a GPU: each case eagerly (one launch per kernel) and as a replayed CUDA graph
    modes = [False, True] if device.type == "cuda" else [False]
    print("| agents | solver | model calls | CUDA graph | ms per frame | within 5 ms frame |")
    print("|---|---|---|---|---|---|")
    for agents in (9, 100):
        for solver, steps in cases:
            for graph in modes:
                ms = time_plan(models, agents, solver, steps, repeats, a.guidance, graph)
                ok = "yes" if ms <= FRAME_MS else f"no, {ms / FRAME_MS:.1f}x over"
                g = "yes" if graph else "no"
                print(f"| {agents} | {solver} | {steps or k} | {g} | {ms:.1f} | {ok} |")
    if device.type != "cuda":
        print("\n(the 5 ms target is for a GPU; this is a CPU run)")


if __name__ == "__main__":
    main()
