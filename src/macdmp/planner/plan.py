"""Batched planning for all agents of a frame: one diffusion batch, one action per agent."""

from __future__ import annotations

import numpy as np
import torch

from macdmp.diffusion.sampler import Conditioning, noise_draws, sample
from macdmp.diffusion.schedule import NoiseSchedule

# `models` below is a macdmp.planner.models.PlannerModels, annotated as a plain Module: that
# module builds actors from this one, so importing it here would make the two import each other.

_SCHEDULES: dict[tuple[int, str, str], NoiseSchedule] = {}


def _schedule(models: torch.nn.Module, device: torch.device) -> NoiseSchedule:
    key = (models.cfg.n_diffusion_steps, models.cfg.beta_schedule, str(device))
    if key not in _SCHEDULES:
        _SCHEDULES[key] = models.schedule(device)
    return _SCHEDULES[key]


class _GraphedSampler:
    """One planning call's whole sampling loop captured in a CUDA graph, for one batch shape.

    A plan is hundreds of small kernels per solver step; launched one by one from Python they
    cost about 8x their GPU time (docs/models.md). Replaying a captured graph launches them all
    at once. Inputs (first observations, Gaussian draws) go through static buffers.
    """

    def __init__(self, models, sch, shape, solver, steps, scale, clip_x0) -> None:
        dev = sch.device
        self.first = torch.zeros(shape[0], shape[2], device=dev)
        self.noise = torch.zeros(noise_draws(solver, sch.n_steps), *shape, device=dev)

        def run() -> torch.Tensor:
            return sample(
                models.eps,
                sch,
                shape,
                solver=solver,
                steps=steps,
                cond=Conditioning.first_step(self.first, shape[1]),
                value=models.classifier,
                guidance_scale=scale,
                clip_x0=clip_x0,
                noise=self.noise,
            )

        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: allocator pools and cuDNN choices before capture
                run()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run()

    def __call__(self, first: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        self.first.copy_(first)
        self.noise.normal_(generator=generator)
        self.graph.replay()
        return self.out.clone()


_GRAPHS: dict[tuple, _GraphedSampler] = {}


def plan(
    models: torch.nn.Module,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    solver: str = "dpm2",
    steps: int | None = 10,
    guidance_scale: float = 0.1,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: float | None = 5.0,
    cuda_graph: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plan for A agents at once from their observations (A, 4) and mean fields (A, 4).

    Returns ``actions`` (A,) float64 demands in RBs in [0, M x L] and ``plans`` (A, H, C) in raw
    units (own observations, then mean-field ones when the model uses them). With
    ``n_candidates`` > 1 each agent samples that many plans and keeps the one the classifier
    values most. A model trained with ``use_mf=False`` ignores ``mean_field``. ``steps`` is the
    number of solver steps (DDPM always runs all K; pass None or K). ``clip_x0`` bounds each
    step's estimate of the clean plan, in standard deviations of the training data.
    ``cuda_graph`` (default: on for CUDA models) replays the whole sampling loop as one captured
    CUDA graph per batch shape; the first call of a shape captures it.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates: must be >= 1 (got {n_candidates})")
    cfg = models.cfg
    device = models.normalizer.obs_mean.device
    o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
    if o.dim() != 2 or o.shape[1] != cfg.obs_dim:
        raise ValueError(f"obs: expected shape (A, {cfg.obs_dim}) (got {tuple(o.shape)})")
    a = o.shape[0]
    mf = None
    if cfg.use_mf:
        if mean_field is None:
            raise ValueError("mean_field: this model uses the mean field; pass (A, 4) values")
        mf = torch.as_tensor(np.asarray(mean_field), dtype=torch.float32, device=device)
        if mf.shape != o.shape:
            raise ValueError(f"mean_field: expected shape {tuple(o.shape)} (got {tuple(mf.shape)})")
    if solver == "ddpm" and steps is not None and steps != cfg.n_diffusion_steps:
        raise ValueError(f"steps: DDPM runs all K = {cfg.n_diffusion_steps} steps (got {steps})")
    h = cfg.horizon
    with torch.inference_mode():
        first = models.to_model_space(o[:, None], None if mf is None else mf[:, None])[:, 0]
        first = first.repeat_interleave(n_candidates, dim=0)
    shape = (a * n_candidates, h, cfg.channels)
    sch = _schedule(models, device)
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph: needs the models on a CUDA device")
        key = (id(models), shape, solver, steps, float(guidance_scale), clip_x0)
        if key not in _GRAPHS:
            _GRAPHS[key] = _GraphedSampler(
                models, sch, shape, solver, steps, guidance_scale, clip_x0
            )
        z = _GRAPHS[key](first, generator)
    else:
        z = sample(
            models.eps,
            sch,
            shape,
            solver=solver,
            steps=steps,
            cond=Conditioning.first_step(first.clone(), h),
            value=models.classifier,
            guidance_scale=guidance_scale,
            generator=generator,
            clip_x0=clip_x0,
        )
    with torch.inference_mode():
        if n_candidates > 1:
            k1 = torch.zeros(z.shape[0], dtype=torch.long, device=device)
            score = models.classifier(z, k1).view(a, n_candidates)
            best = score.argmax(dim=1)
            z = z.view(a, n_candidates, h, -1)[torch.arange(a, device=device), best]
        own, mf_plan = models.from_model_space(z)
        # The pinned first entry is the current observation exactly; act on it and o_t+1.
        actions = models.action_rbs(o, own[:, 1])
        plans = own if mf_plan is None else torch.cat([own, mf_plan], dim=-1)
    return actions.double().cpu().numpy(), plans.cpu().numpy()
