"""Discrete noise schedules (beta_1..beta_K) and the forward process q(x_k | x_0).

Index convention: a diffusion *level* k runs over 1..K (k = 0 is clean data); networks and the
tensors below are indexed by ``i = k - 1`` in [0, K).
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear")


def make_betas(n_steps: int, kind: str = "cosine") -> torch.Tensor:
    """beta_1..beta_K as float64: the cosine schedule of Nichol & Dhariwal or a linear one."""
    if n_steps < 1:
        raise ValueError(f"n_diffusion_steps: must be >= 1 (got {n_steps})")
    if kind == "cosine":
        s = 0.008
        t = torch.linspace(0, n_steps, n_steps + 1, dtype=torch.float64) / n_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    if kind == "linear":
        # Ho et al.'s 1e-4..0.02 over 1000 steps, rescaled so that any K reaches similar noise.
        scale = 1000.0 / n_steps
        return torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), n_steps, dtype=torch.float64)
    raise ValueError(f"beta_schedule: must be one of {SCHEDULES} (got {kind!r})")


class NoiseSchedule:
    """Precomputed DDPM quantities for K levels, on one device, float32."""

    def __init__(self, n_steps: int, kind: str = "cosine", device: torch.device | str = "cpu"):
        betas = make_betas(n_steps, kind)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.n_steps = n_steps
        self.kind = kind
        self.device = torch.device(device)

        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype=torch.float32, device=self.device)

        # float64 copies on the CPU: the samplers read their per-step constants from these, so
        # a sampling loop needs no device-to-host copy (and can be captured in a CUDA graph)
        self.betas64 = betas
        self.abar64 = abar
        self.abar_prev64 = abar_prev
        self.betas = f32(betas)
        self.alphas = f32(alphas)
        self.alpha_bars = f32(abar)
        self.sqrt_abar = f32(abar.sqrt())
        self.sqrt_1m_abar = f32((1 - abar).sqrt())
        # Sigma_k of Eq. 20: the variance of q(x_{k-1} | x_k, x_0); zero at k = 1.
        self.posterior_var = f32(betas * (1 - abar_prev) / (1 - abar))
        # Level 0 (clean) is prepended for the ODE solvers: alpha = 1, sigma = 0.
        self.ode_alpha = torch.cat([torch.ones(1, dtype=torch.float64), abar.sqrt()])
        self.ode_sigma = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - abar).sqrt()])

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule on another device."""
        return NoiseSchedule(self.n_steps, self.kind, device)

    def q_sample(self, x0: torch.Tensor, idx: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps for a batch of indices ``idx = k - 1``."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.sqrt_abar[idx].view(shape) * x0 + self.sqrt_1m_abar[idx].view(shape) * noise
