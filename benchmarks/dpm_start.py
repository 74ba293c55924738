"""Spread of DPM-Solver samples when the solver starts at level K versus at alpha >= 0.1.

    .venv/bin/python benchmarks/dpm_start.py     # about a minute on 2 CPU cores

Trains the small model of tests/test_train.py (600 steps, K = 20, synthetic windows) and prints,
for each solver, the ratio of the samples' std to the data's (1 is right) and the mean error,
for the two starting levels. docs/guide/models.md quotes this table.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import macdmp.diffusion.sampler as sampler
from macdmp.diffusion.sampler import Conditioning, sample
from macdmp.methods import load_run, train
from macdmp.planner import make_config
from macdmp.planner.synthetic import SyntheticWindows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_train import TRAINED  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    cfg = make_config("demo", **TRAINED)
    data = SyntheticWindows(cfg.horizon, cfg.gamma, n_modes=2, seed=3)
    with tempfile.TemporaryDirectory() as run:
        train(cfg, data, run, progress=False)
        models = load_run(run)
    sch = models.schedule()
    w = data.sample(2000, np.random.default_rng(7))
    z0 = models.to_model_space(torch.from_numpy(w["x"]), None)
    cond = Conditioning.first_step(z0[:, 0], cfg.horizon)
    tuned = sampler.dpm_levels

    def from_top(sch_, steps):  # the first version: uniform levels from K
        return torch.linspace(sch_.n_steps, 0, steps + 1).round().long().tolist()

    print(f"{'solver':>7} {'steps':>5} {'start':>12} {'std ratio':>10} {'mean err':>9}")
    for solver, steps in (("ddpm", None), ("dpm1", 10), ("dpm2", 10), ("dpm2", 5)):
        for name, fn in (("level K", from_top), ("alpha>=0.1", tuned)):
            if solver == "ddpm" and name != "level K":
                continue
            sampler.dpm_levels = fn
            z = sample(
                models.eps,
                sch,
                tuple(z0.shape),
                solver=solver,
                steps=steps,
                cond=cond,
                generator=torch.Generator().manual_seed(0),
                clip_x0=5.0,
            )
            ratio = float((z[:, 1:].std(0) / z0[:, 1:].std(0)).mean())
            err = float((z[:, 1:].mean(0) - z0[:, 1:].mean(0)).abs().mean())
            print(
                f"{solver:>7} {steps or cfg.n_diffusion_steps:>5} {name:>12} {ratio:>10.3f} "
                f"{err:>9.3f}"
            )
    sampler.dpm_levels = tuned


if __name__ == "__main__":
    main()
