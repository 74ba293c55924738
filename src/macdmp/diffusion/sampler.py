"""Samplers for a trained noise model: guided DDPM (paper Eq. 20) and DPM-Solver(++) 1/2.

One entry point, :func:`sample`, with ``solver`` in ``SOLVERS`` and its own ``steps``. Known
entries (the current observation) are pinned through a :class:`Conditioning` mask after every
update, and classifier guidance takes the gradient of a scalar value function of the sample.
Classifier-free guidance: with a ``condition`` vector the noise model is called as
``eps_model(x, k, condition, keep)`` (``keep`` (B,): 1 conditional, 0 unconditional) and
combined as eps_uncond + w (eps_cond - eps_uncond), both halves in one batched call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from macdmp.diffusion.schedule import NoiseSchedule

SOLVERS = ("ddpm", "dpm1", "dpm2")
# The guidance weights' defaults, for MA-CDMP and the baselines alike: ``guide`` is classifier
# guidance's scale zeta (the paper's 0.1), ``cfg`` classifier-free guidance's weight w in
# eps_u + w (eps_c - eps_u) (Decision Diffuser's 1.2; 0 unconditional, 1 conditional alone).
DEFAULT_GUIDE = 0.1
DEFAULT_CFG = 1.2

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# eps(x, k, condition, keep) of classifier-free guidance (keep (B,) float: 1 kept, 0 dropped)
CondEpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ValueModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (x, k-1) -> d value / d x, for a classifier that is not a torch module (an exported one)
ValueGrad = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Conditioning:
    """Entries of x where ``mask`` is True are held at ``values`` (both broadcastable to x)."""

    mask: torch.Tensor
    values: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the pinned entries replaced by their known values."""
        return torch.where(self.mask, self.values, x)

    @staticmethod
    def first_step(first: torch.Tensor, horizon: int) -> Conditioning:
        """Pin x[:, 0, :] to ``first`` (B, C) for sequences of shape (B, horizon, C)."""
        return Conditioning.prefix(first[:, None], horizon)

    @staticmethod
    def prefix(known: torch.Tensor, horizon: int) -> Conditioning:
        """Pin the first P steps x[:, :P, :] to ``known`` (B, P, C), for sequences of shape
        (B, horizon, C): the current observation (P = 1), or it and the ones before it."""
        b, p, c = known.shape
        if not 1 <= p <= horizon:
            raise ValueError(f"known: 1 to {horizon} steps to pin (got {p})")
        mask = torch.zeros(1, horizon, 1, dtype=torch.bool, device=known.device)
        mask[:, :p] = True
        values = torch.zeros(b, horizon, c, dtype=known.dtype, device=known.device)
        values[:, :p] = known
        return Conditioning(mask, values)


def _autograd_value_grad(value: ValueModel) -> ValueGrad:
    def grad(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(value(xg, idx).sum(), xg)
        return g

    return grad


def guided_eps(eps_model: CondEpsModel, condition: torch.Tensor, cfg: float = 1.0) -> EpsModel:
    """The (x, k) -> eps of classifier-free guidance with weight w = ``cfg``:
    eps_uncond + w (eps_cond - eps_uncond), the conditional and unconditional halves computed
    in one batched call of ``eps_model``. w = 1 is the conditional model alone (one call of the
    batch size), w = 0 the unconditional one. ``condition`` is (B, D), one row per sample."""
    if not math.isfinite(cfg):
        raise ValueError(f"cfg: must be a finite number (got {cfg})")
    w = float(cfg)
    b = condition.shape[0]
    dev = condition.device
    if w == 1.0 or w == 0.0:
        keep = torch.full((b,), w, device=dev)
        return lambda x, k: eps_model(x, k, condition, keep)
    # the two halves interleaved (row i's conditional call, then its unconditional one), so
    # that the rows keep their order: runs acting jointly own blocks of rows
    # (macdmp.methods.joint)
    keep2 = torch.stack([torch.ones(b, device=dev), torch.zeros(b, device=dev)], 1).flatten()
    cond2 = condition.repeat_interleave(2, dim=0)

    def eps(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        e = eps_model(x.repeat_interleave(2, dim=0), k.repeat_interleave(2, dim=0), cond2, keep2)
        e = e.unflatten(0, (-1, 2))
        e_cond, e_uncond = e[:, 0], e[:, 1]
        return e_uncond + w * (e_cond - e_uncond)

    return eps


def sample(
    eps_model: EpsModel | CondEpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    solver: str = "ddpm",
    steps: int | None = None,
    cond: Conditioning | None = None,
    value: ValueModel | None = None,
    guide: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
    noise: torch.Tensor | None = None,
    condition: torch.Tensor | None = None,
    cfg: float = 1.0,
    start_level: int | None = None,
    x_start: torch.Tensor | None = None,
    guide_min_sigma: float = 0.0,
    value_grad: ValueGrad | None = None,
) -> torch.Tensor:
    """Draw x_0 of ``shape`` by reverse diffusion from N(0, I).

    ``noise``, if given, holds every Gaussian draw the solver makes, shape
    ``(noise_draws(solver, K), *shape)``, instead of drawing from ``generator``; a sampler fed
    this way makes no host-device round trip and can be captured in a CUDA graph.
    ``solver``: "ddpm" (ancestral, K steps, Eq. 20), "dpm1" (first-order DPM-Solver, i.e. DDIM)
    or "dpm2" (second-order multistep DPM-Solver++) with ``steps`` model calls (default K).
    ``value`` (x, k-1) -> (B,) is the classifier; it is only called when guide != 0.
    ``clip_x0`` clamps each step's prediction of x_0 to [-clip_x0, clip_x0]: with few levels the
    last betas approach 1 and small noise-prediction errors are amplified by 1 / sqrt(alpha_k).
    ``condition`` (B, D), if given, makes this classifier-free guided sampling: ``eps_model``
    is then called as (x, k, condition, keep) and combined by :func:`guided_eps` with weight
    ``cfg`` (1: conditional only; > 1 pushes beyond the condition). Without it the
    sampler calls ``eps_model(x, k)`` and ``cfg`` must stay 1.

    Warm start (DPM solvers): ``start_level`` k_s, one of ``dpm_levels(schedule, steps)``, and
    ``x_start`` of ``shape``, an estimate of x_0 (the previous frame's plan, shifted): the solver
    starts from x = alpha_s x_start + sigma_s z (z the first Gaussian draw) and takes only the
    grid's steps below k_s (``dpm_warm_level`` picks k_s from a fraction of the schedule).
    ``guide_min_sigma`` skips guidance (the classifier's forward and backward) at levels whose
    sigma_k is below it, where the guidance term, scaled by sigma_k, hardly moves the sample.
    ``value_grad`` (x, k-1) -> grad, if given, replaces the autograd gradient of ``value``.
    """
    if clip_x0 is not None and not clip_x0 > 0:
        raise ValueError(f"clip_x0: must be > 0 or None (got {clip_x0})")
    if solver not in SOLVERS:
        raise ValueError(f"solver: must be one of {SOLVERS} (got {solver!r})")
    big_k = schedule.n_steps
    n = big_k if steps is None else int(steps)
    if not 1 <= n <= big_k:
        raise ValueError(f"steps: must be in 1..{big_k} (the trained K) (got {steps})")
    if solver == "ddpm" and n != big_k:
        raise ValueError(
            f"steps: DDPM runs all K = {big_k} steps (got {steps}); use solver='dpm1' or 'dpm2' "
            "for fewer"
        )
    if guide != 0.0 and value is None and value_grad is None:
        raise ValueError("guide: non-zero guidance needs a value (classifier) model")
    if condition is None:
        if cfg != 1.0:
            raise ValueError("cfg: classifier-free guidance needs a condition vector")
        eps_fn = eps_model
    else:
        if condition.dim() != 2 or condition.shape[0] != shape[0]:
            raise ValueError(
                f"condition: expected a ({shape[0]}, D) tensor (got {tuple(condition.shape)})"
            )
        eps_fn = guided_eps(eps_model, condition, cfg)  # type: ignore[arg-type]
    if not guide_min_sigma >= 0.0:
        raise ValueError(f"guide_min_sigma: must be >= 0 (got {guide_min_sigma})")
    if (start_level is None) != (x_start is None):
        raise ValueError("start_level: a warm start needs both start_level and x_start")
    if start_level is not None:
        if solver == "ddpm":
            raise ValueError("start_level: warm starts are for the DPM solvers ('dpm1', 'dpm2')")
        grid = dpm_levels(schedule, n)
        if start_level not in grid[:-1]:
            raise ValueError(f"start_level: must be one of the solver's levels {grid[:-1]}")
        if tuple(x_start.shape) != tuple(shape):  # type: ignore[union-attr]
            raise ValueError(f"x_start: expected shape {tuple(shape)} (got {tuple(x_start.shape)})")  # type: ignore[union-attr]
    if value_grad is None and value is not None:
        value_grad = _autograd_value_grad(value)
    device = schedule.device
    guided = guide != 0.0
    if noise is not None and tuple(noise.shape) != (noise_draws(solver, big_k), *shape):
        raise ValueError(
            f"noise: expected shape {(noise_draws(solver, big_k), *shape)} "
            f"(got {tuple(noise.shape)})"
        )
    ctx = torch.no_grad() if guided else torch.inference_mode()
    with ctx:
        x = torch.randn(shape, generator=generator, device=device) if noise is None else noise[0]
        if start_level is not None:
            a, s = schedule.ode_alpha[start_level].item(), schedule.ode_sigma[start_level].item()
            x = a * x_start + s * x  # type: ignore[operator]
        if cond is not None:
            x = cond.apply(x)
        if solver == "ddpm":
            return _ddpm(
                eps_fn,
                schedule,
                x,
                cond,
                value_grad,
                guide,
                generator,
                clip_x0,
                noise,
                guide_min_sigma,
            )
        order = 2 if solver == "dpm2" else 1
        return _dpm(
            eps_fn,
            schedule,
            x,
            n,
            order,
            cond,
            value_grad,
            guide,
            clip_x0,
            start_level,
            guide_min_sigma,
        )


def noise_draws(solver: str, n_steps: int) -> int:
    """Gaussian draws of one sample: the start, plus one per step but the last for DDPM."""
    return n_steps if solver == "ddpm" else 1


def _ddpm(
    eps_model: EpsModel,
    sch: NoiseSchedule,
    x: torch.Tensor,
    cond: Conditioning | None,
    value_grad: ValueGrad | None,
    scale: float,
    generator: torch.Generator | None,
    clip_x0: float | None,
    noise: torch.Tensor | None = None,
    guide_min_sigma: float = 0.0,
) -> torch.Tensor:
    # mu = (x - beta/sqrt(1-abar) eps)/sqrt(alpha) (Eq. 20), computed as the posterior mean
    # c0 * x0_hat + c1 * x_k, which is the same number unless x0_hat is clipped.
    b = x.shape[0]
    abar, abar_prev, betas = sch.abar64, sch.abar_prev64, sch.betas64
    c0 = (betas * abar_prev.sqrt() / (1 - abar)).tolist()
    c1 = ((1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)).tolist()
    inv_sa = abar.rsqrt().tolist()
    s1a = (1 - abar).sqrt().tolist()
    var = (betas * (1 - abar_prev) / (1 - abar)).tolist()
    for i in reversed(range(sch.n_steps)):
        idx = torch.full((b,), i, device=x.device, dtype=torch.long)
        x0 = (x - s1a[i] * eps_model(x, idx)) * inv_sa[i]
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        mean = c0[i] * x0 + c1[i] * x
        if scale != 0.0 and var[i] > 0.0 and s1a[i] >= guide_min_sigma:
            mean = mean + (scale * var[i]) * value_grad(x, idx)  # type: ignore[misc]
        if i > 0:
            if noise is None:
                z = torch.randn(x.shape, generator=generator, device=x.device)
            else:
                z = noise[sch.n_steps - i]
            x = mean + var[i] ** 0.5 * z
        else:
            x = mean
        if cond is not None:
            x = cond.apply(x)
    return x


# The DPM solvers start at the highest level whose signal coefficient alpha_k = sqrt(abar_k) is
# at least this. The cosine schedule's last level has alpha ~ 1e-3 (beta clipped to 0.999), and
# a deterministic step from there multiplies the model's error by alpha_t / alpha_K (30x on the
# demo model: samples came out 2.5x too spread). Starting where alpha >= 0.1 and drawing
# x ~ N(0, I) there leaves out at most alpha^2 = 1% of the data's variance in the start.
DPM_START_ALPHA = 0.1


def dpm_max_steps(sch: NoiseSchedule, start_alpha: float = DPM_START_ALPHA) -> int:
    """The most steps the DPM solvers can take: the top level with alpha_k >= start_alpha."""
    return _top_level(sch.n_steps, sch.kind, start_alpha)


@functools.lru_cache(maxsize=64)
def _top_level(n_steps: int, kind: str, start_alpha: float) -> int:
    # a planner asks every frame, so it is computed once per schedule
    alpha = NoiseSchedule(n_steps, kind).ode_alpha.tolist()  # alpha[0] = 1 (clean) ... alpha[K]
    return max(k for k in range(1, n_steps + 1) if alpha[k] >= start_alpha or k == 1)


def dpm_levels(sch: NoiseSchedule, steps: int, start_alpha: float = DPM_START_ALPHA) -> list[int]:
    """Levels k_0 > ... > k_steps = 0 visited by the DPM solvers, uniform in time from the top
    level with alpha_k >= start_alpha (steps beyond that many levels are refused)."""
    return list(_levels(sch.n_steps, sch.kind, int(steps), start_alpha))


@functools.lru_cache(maxsize=256)
def _levels(n_steps: int, kind: str, steps: int, start_alpha: float) -> tuple[int, ...]:
    top = _top_level(n_steps, kind, start_alpha)
    if not 1 <= steps <= top:
        raise ValueError(
            f"steps: must be in 1..{top} for the DPM solvers (levels with alpha_k >= "
            f"{start_alpha} of the trained K = {n_steps}) (got {steps})"
        )
    grid = torch.linspace(top, 0, steps + 1, dtype=torch.float64).round().long()
    return tuple(grid.tolist())


def dpm_warm_level(sch: NoiseSchedule, steps: int, fraction: float) -> int:
    """The level a warm start re-noises to: of the solver's levels for ``steps`` (above 0), the
    one nearest to ``fraction`` x K (ties to the lower, cheaper one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"warm: must be in (0, 1], a fraction of the K levels (got {fraction})")
    grid = dpm_levels(sch, steps)[:-1]
    target = fraction * sch.n_steps
    return min(grid, key=lambda k: (abs(k - target), k))


def _dpm(
    eps_model: EpsModel,
    sch: NoiseSchedule,
    x: torch.Tensor,
    steps: int,
    order: int,
    cond: Conditioning | None,
    value_grad: ValueGrad | None,
    scale: float,
    clip_x0: float | None,
    start_level: int | None = None,
    guide_min_sigma: float = 0.0,
) -> torch.Tensor:
    # Data-prediction form (DPM-Solver++): well defined for the last step down to sigma = 0.
    levels = dpm_levels(sch, steps)
    if start_level is not None:
        levels = levels[levels.index(start_level) :]
        steps = len(levels) - 1
    alpha = sch.ode_alpha.tolist()
    sigma = sch.ode_sigma.tolist()
    # log-SNR in Python floats: per-call tensor ops here cost more than a small model's step
    lam = [float("inf") if s == 0 else math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    b = x.shape[0]
    prev_x0: torch.Tensor | None = None
    prev_h = 0.0
    for j in range(steps):
        s, t = levels[j], levels[j + 1]
        idx = torch.full((b,), s - 1, device=x.device, dtype=torch.long)
        eps = eps_model(x, idx)
        if scale != 0.0 and sigma[s] >= guide_min_sigma:
            # Score guidance: eps_hat = eps - zeta * sigma_s * grad J, the same shift as Eq. 20.
            eps = eps - (scale * sigma[s]) * value_grad(x, idx)  # type: ignore[misc]
        x0 = (x - sigma[s] * eps) / alpha[s]
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if cond is not None:
            x0 = cond.apply(x0)
        # exp(-h) = sigma_t alpha_s / (alpha_t sigma_s), written so that sigma_t = 0 is exact.
        emh = sigma[t] * alpha[s] / (alpha[t] * sigma[s])
        last = t == 0
        if order == 2 and prev_x0 is not None and not last:
            h = lam[t] - lam[s]
            r = prev_h / h
            d = x0 + (0.5 / r) * (x0 - prev_x0)
        else:
            d = x0
        x = (sigma[t] / sigma[s]) * x - alpha[t] * (emh - 1.0) * d
        if cond is not None:
            x = cond.apply(x)
        if not last:
            prev_h = lam[t] - lam[s]
        prev_x0 = x0
    return x
