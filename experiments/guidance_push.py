"""How hard does classifier guidance push? Plan and action displacement per guidance scale.

For a trained MA-CDMP run folder, take the first observation and mean field of random windows of
a dataset (the states its data visits), plan for all of them at every guidance scale of a log
grid with the same noise (one generator seed, reset before each scale), and compare every
guided plan and action with the unguided one (scale 0):

    |da|        mean absolute change of the action (RBs); p95 its 95th percentile
    rel         mean |da| / mean unguided action
    dplan       RMS change of the planned own observations o_t+1 .. o_t+H-1 (packets)
    dnext       RMS change of the planned o_t+1 alone (what the action is computed from)
    dz          RMS change of the whole plan in the model's normalised units
    J           mean predicted return J_psi of the plan (raw return units; higher is better)
    clip        share of actions at 0 or M x L (the inverse dynamics' clip)
    sat         share of plans with an entry at 4.5 or more training standard deviations (the
                sampler clips its clean-plan estimate at 5): plans pushed off the data
    J>0         share of plans the classifier values above 0, which no return reaches (every
                reward is <= 0): the guidance has found the classifier's blind spots
Where sat and J>0 climb, the plans have broken.

    PYTHONPATH=src python experiments/guidance_push.py RUN_DIR --data DATA.h5 \\
        [--scales 0,0.01,0.03,0.1,0.3,1,3,10,30,100] [--states 1024] [--solver dpm2] \\
        [--steps 10] [--seed 0] [--device cpu|cuda] [--json out.json]

The QoS at the same scales comes from `macdmp evaluate --policy RUN_DIR,guide=S ...`
(experiments/guidance_study.sh runs both).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from macdmp.data.windows import open_windows
from macdmp.methods import load_run
from macdmp.planner import plan

DEFAULT_SCALES = "0,0.01,0.03,0.1,0.3,1,3,10,30,100"


def push_table(
    models: torch.nn.Module,
    obs: np.ndarray,
    mf: np.ndarray,
    scales: list[float],
    solver: str = "dpm2",
    steps: int | None = 10,
    seed: int = 0,
) -> list[dict[str, float]]:
    """One row per scale: displacement of plans and actions from the unguided ones."""
    dev = models.normalizer.obs_mean.device
    gen = torch.Generator(device=dev)
    runs = {}
    for s in sorted(set([0.0, *scales])):
        gen.manual_seed(seed)
        t0 = time.perf_counter()
        act, plans = plan(models, obs, mf if models.cfg.use_mf else None, solver=solver,
                          steps=steps, guide=s, generator=gen)  # fmt: skip
        runs[s] = (act, plans, time.perf_counter() - t0)
    a0, p0, _ = runs[0.0]
    d = models.cfg.obs_dim
    rows = []
    for s in sorted(set([0.0, *scales])):
        act, plans, secs = runs[s]
        own = torch.as_tensor(plans[..., :d], dtype=torch.float32, device=dev)
        xbar = None
        if models.cfg.use_mf:
            xbar = torch.as_tensor(plans[..., d:], dtype=torch.float32, device=dev)
        with torch.inference_mode():
            j = models.predict_return(own, xbar).double().cpu().numpy()
            z = models.to_model_space(own, xbar).cpu().numpy()
            z0 = models.to_model_space(
                torch.as_tensor(p0[..., :d], dtype=torch.float32, device=dev),
                None if xbar is None
                else torch.as_tensor(p0[..., d:], dtype=torch.float32, device=dev),
            ).cpu().numpy()  # fmt: skip
        da = np.abs(act - a0)
        sat = ~np.isfinite(z).all(axis=(1, 2)) | (np.abs(z[:, 1:]) >= 4.5).any(axis=(1, 2))
        rows.append({
            "scale": s,
            "da_mean": float(da.mean()),
            "da_p95": float(np.quantile(da, 0.95)),
            "rel": float(da.mean() / max(a0.mean(), 1e-9)),
            "dplan": float(np.sqrt(((plans[:, 1:, :d] - p0[:, 1:, :d]) ** 2).mean())),
            "dnext": float(np.sqrt(((plans[:, 1, :d] - p0[:, 1, :d]) ** 2).mean())),
            "dz": float(np.sqrt(((z[:, 1:] - z0[:, 1:]) ** 2).mean())),
            "J": float(j.mean()),
            "action_mean": float(act.mean()),
            "clip": float(((act <= 0) | (act >= models.rbs)).mean()),
            "sat": float(sat.mean()),
            "j_pos": float((j > 0).mean()),
            "plan_s": secs,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="an MA-CDMP training run folder")
    p.add_argument("--data", required=True, help="dataset whose states are planned from")
    p.add_argument("--scales", default=DEFAULT_SCALES, help=f"comma list ({DEFAULT_SCALES})")
    p.add_argument("--states", type=int, default=1024, help="states planned from (default 1024)")
    p.add_argument("--solver", default="dpm2")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="noise seed, the same at every scale")
    p.add_argument("--device", default=None)
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    try:
        scales = [float(v) for v in args.scales.split(",") if v.strip()]
    except ValueError:
        p.error(f"--scales: expected a comma list of numbers (got {args.scales!r})")
    if not scales or any(not np.isfinite(s) for s in scales):
        p.error("--scales: give finite numbers")
    if args.states < 1:
        p.error("--states: must be >= 1")
    torch.set_num_threads(1)
    models = load_run(args.run, args.device)
    if models.name != "ma-cdmp":
        p.error(f"{args.run}: a {models.name} run; guidance is MA-CDMP's")
    ds = open_windows(args.data, models.cfg.horizon, models.cfg.gamma)
    batch = ds.sample(args.states, np.random.default_rng(args.seed))
    obs, mf = batch["x"][:, 0], batch["xbar"][:, 0]
    rows = push_table(models, obs, mf, scales, args.solver, args.steps, args.seed)
    label = "MA-CDMP" if models.cfg.use_mf else "MA-CDMP w/o MF"
    print(f"{args.run} ({label}, reward {models.cfg.reward}, step {models.train_step}); "
          f"{args.states} states of {args.data}; {args.solver} {args.steps} steps, noise seed "
          f"{args.seed}; device {models.device}")  # fmt: skip
    print()
    print("| scale | mean \\|da\\| RBs | p95 \\|da\\| | rel | dplan pkts | dnext pkts | dz | "
          "J | mean a | clip | sat | J>0 |")  # fmt: skip
    print("| " + " | ".join(["---"] * 12) + " |")
    for r in rows:
        print(f"| {r['scale']:g} | {r['da_mean']:.3f} | {r['da_p95']:.3f} | {r['rel']:.3f} | "
              f"{r['dplan']:.3f} | {r['dnext']:.3f} | {r['dz']:.3f} | {r['J']:.2f} | "
              f"{r['action_mean']:.2f} | {r['clip']:.3f} | {r['sat']:.3f} | "
              f"{r['j_pos']:.3f} |")  # fmt: skip
    if args.json:
        meta = {"run": args.run, "use_mf": models.cfg.use_mf, "reward": models.cfg.reward,
                "train_step": models.train_step, "settings": vars(args)}  # fmt: skip
        tmp = f"{args.json}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({**meta, "rows": rows}, fh, indent=2)
        os.replace(tmp, args.json)  # atomic: a stopped run leaves no half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
