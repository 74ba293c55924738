"""GPU-only checks (skipped without CUDA, so never in CI): the CUDA-graph sampling path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdmp.diffusion.sampler import Conditioning, noise_draws, sample
from macdmp.planner import PlannerModels, make_config, plan
from macdmp.planner.plan import _GraphedSampler
from macdmp.planner.synthetic import SyntheticWindows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm2", 10), ("dpm1", 5)])
def test_cuda_graph_replays_the_eager_sampler(solver, steps):
    cfg = make_config("demo")
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    models = PlannerModels(cfg, data.stats, data.rbs).cuda().eval().requires_grad_(False)
    sch = models.schedule()
    shape = (12, cfg.horizon, cfg.channels)
    graphed = _GraphedSampler(models, sch, shape, solver, steps, 0.3, 5.0)
    for seed in (1, 2):  # two replays with new inputs
        g = torch.Generator(device="cuda").manual_seed(seed)
        first = torch.randn(shape[0], shape[2], device="cuda", generator=g)
        noise = torch.randn(noise_draws(solver, sch.n_steps), *shape, device="cuda", generator=g)
        graphed.first.copy_(first)
        graphed.noise.copy_(noise)
        graphed.graph.replay()
        eager = sample(
            models.eps,
            sch,
            shape,
            solver=solver,
            steps=steps,
            cond=Conditioning.first_step(first, shape[1]),
            value=models.classifier,
            guidance_scale=0.3,
            clip_x0=5.0,
            noise=noise,
        )
        torch.testing.assert_close(graphed.out, eager, rtol=1e-4, atol=1e-4)


def test_plan_on_gpu_defaults_to_graphs_and_stays_in_range():
    cfg = make_config("demo")
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    models = PlannerModels(cfg, data.stats, data.rbs).cuda().eval().requires_grad_(False)
    obs = np.random.default_rng(0).uniform(0, 20, (9, 4)).astype(np.float32)
    gen = torch.Generator(device="cuda").manual_seed(0)
    actions, plans = plan(models, obs, obs, "dpm2", 10, 0.1, 1, gen)
    assert actions.shape == (9,) and np.all((actions >= 0) & (actions <= data.rbs))
    assert np.allclose(plans[:, 0, :4], obs, atol=1e-3)
