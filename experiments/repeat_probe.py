"""Does one process plan the same bits as the next? (docs/adaptive-study.md, item 8)

An untrained `top-steer` model (seeded), 204 agents' observations (seeded), twenty planning
calls, each with its generator seeded: the sha256 of every plan and action. Run it in several
processes with cuDNN's autotuner on (as the package sets it on CUDA) and off; equal digests
mean the processes planned the same bits.

    PYTHONPATH=src python3 experiments/repeat_probe.py --autotune on   # and off; several of each

Not run on a GPU yet (the lease of 2026-12-05 had no time left for it); on the CPU two
processes give the same digest.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import torch

from macdmp.planner import PlannerModels, make_config
from macdmp.planner.plan import plan_batch
from macdmp.planner.synthetic import SyntheticWindows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--autotune", choices=("on", "off"), required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = args.autotune == "on"
    cfg = make_config("top-steer")
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    models = PlannerModels(cfg, data.stats, data.rbs).to(args.device).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 40, size=(204, cfg.obs_dim)).astype(np.float32)
    mf = rng.uniform(0, 40, size=(204, cfg.obs_dim)).astype(np.float32)
    h = hashlib.sha256()
    for k in range(20):
        g = torch.Generator(device=args.device).manual_seed(k)
        actions, z = plan_batch(models, obs, mf, generator=g)
        h.update(actions.cpu().numpy().tobytes())
        h.update(z.cpu().numpy().tobytes())
    print(f"autotune {args.autotune}: {h.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
