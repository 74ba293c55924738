"""Batched planning for all agents of a frame: one diffusion batch, one action per agent."""

from __future__ import annotations

import numpy as np
import torch

from macdmp.diffusion.sampler import Conditioning, sample
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.planner.models import PlannerModels

_SCHEDULES: dict[tuple[int, str, str], NoiseSchedule] = {}


def _schedule(models: PlannerModels, device: torch.device) -> NoiseSchedule:
    key = (models.cfg.n_diffusion_steps, models.cfg.beta_schedule, str(device))
    if key not in _SCHEDULES:
        _SCHEDULES[key] = models.schedule(device)
    return _SCHEDULES[key]


def plan(
    models: PlannerModels,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    solver: str = "dpm2",
    steps: int | None = 10,
    guidance_scale: float = 0.1,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: float | None = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Plan for A agents at once from their observations (A, 4) and mean fields (A, 4).

    Returns ``actions`` (A,) float64 demands in RBs in [0, M x L] and ``plans`` (A, H, C) in raw
    units (own observations, then mean-field ones when the model uses them). With
    ``n_candidates`` > 1 each agent samples that many plans and keeps the one the classifier
    values most. A model trained with ``use_mf=False`` ignores ``mean_field``. ``steps`` is the
    number of solver steps (DDPM always runs all K; pass None or K). ``clip_x0`` bounds each
    step's estimate of the clean plan, in standard deviations of the training data.
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
    cond = Conditioning.first_step(first.clone(), h)
    z = sample(
        models.eps,
        _schedule(models, device),
        (a * n_candidates, h, cfg.channels),
        solver=solver,
        steps=steps,
        cond=cond,
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
