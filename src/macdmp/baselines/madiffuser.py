"""MA-Diffuser: Diffuser (Janner et al., ICML 2022) per agent, parameters shared (DTDE).

Each agent diffuses a joint trajectory of its own observations and demands, (o, a) over H
frames, the current observation pinned at the first frame (inpainting; the first demand is
generated). A value function J(tau_k, k), MA-CDMP's down-sampling half U-Net, is trained on the
noised trajectories to predict the agent's normalised horizon return y (the window field ``y``,
gamma 0.99). Planning is DDPM over all K steps with the value's gradient added to each step's
mean, scaled by the posterior variance (Diffuser's guided ``p_sample``; none on the last
``stop_grad`` steps); each agent samples ``candidates`` plans and keeps the one the value rates
highest; the demand is the best plan's first action. The mean field is not used.

Settings follow Diffuser's locomotion reference (horizon 32, K 20, guidance scale 0.1, no
guidance on the last 2 steps, a first-action loss weight of 10, 64 plans per decision); the
paper preset plans with fewer candidates to keep a frame's decision affordable
(docs/baselines.md, "part 2").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from macdmp.baselines.diffusion_common import DiffusionConfig, check_solver, sample, sample_plans
from macdmp.diffusion.backbones import HalfUNet, TemporalUNet
from macdmp.diffusion.sampler import DEFAULT_GUIDE, Conditioning
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.methods.base import DEMO_DIFFUSION, Actor, Method, TrainConfig
from macdmp.methods.learners import Normalizer

OBS = 4
CHANNELS = OBS + 1  # (o, a) per frame


@dataclass(frozen=True)
class MADiffuserConfig(DiffusionConfig):
    horizon: int = 32
    n_diffusion_steps: int = 20
    action_weight: float = 10.0  # Diffuser: the loss weight of the first action
    w_value: float = 1.0
    # execution (actor options): guidance scale, steps without guidance, candidates
    guidance_scale: float = DEFAULT_GUIDE  # the actor's default of its option guide
    stop_grad: int = 2
    candidates: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        self.need(self.action_weight >= 0, "action_weight", ">= 0")
        self.need(self.w_value >= 0, "w_value", ">= 0")
        self.need(np.isfinite(self.guidance_scale), "guidance_scale", "a finite number")
        self.need(0 <= self.stop_grad <= self.n_diffusion_steps, "stop_grad", "in [0, K]")
        self.need(self.candidates >= 1, "candidates", ">= 1")


def pin_first_obs(first: torch.Tensor, horizon: int) -> Conditioning:
    """Pin the observation channels of frame 0 to ``first`` (B, 4); the action stays free."""
    b = first.shape[0]
    mask = torch.zeros(1, horizon, CHANNELS, dtype=torch.bool, device=first.device)
    mask[:, 0, :OBS] = True
    values = torch.zeros(b, horizon, CHANNELS, dtype=first.dtype, device=first.device)
    values[:, 0, :OBS] = first
    return Conditioning(mask, values)


class MADiffuser(Method):
    name = "ma-diffuser"
    label = "MA-Diffuser"
    version = 1
    config_class = MADiffuserConfig
    presets = {
        # Diffuser's locomotion settings, 100 epochs x 1,000 steps (the paper); 8 candidates
        # instead of 64 per agent and frame (docs/baselines.md: the cost of a frame's decision)
        "paper": MADiffuserConfig(candidates=8),
        "demo": MADiffuserConfig(
            horizon=8,
            dim=16,
            n_diffusion_steps=10,
            candidates=4,
            batch_size=64,
            n_epochs=4,
            **DEMO_DIFFUSION,
        ),
    }
    loss_names = ("loss", "diff", "value")
    compile_modules = ("eps", "value")
    actor_options = {
        "guide": ("guide", float),
        "candidates": ("candidates", int),
        "solver": ("solver", str),
        "steps": ("steps", int),
    }
    cfg: MADiffuserConfig

    def __init__(self, cfg: MADiffuserConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.normalizer = Normalizer(stats, OBS)
        self.eps = TemporalUNet(cfg.horizon, CHANNELS, **cfg.unet_kwargs())
        self.value = HalfUNet(cfg.horizon, CHANNELS, **cfg.unet_kwargs())
        # loss weights: the pinned first observation is left out (its noise is never removed
        # by the sampler), the first action counts action_weight times
        w = torch.ones(cfg.horizon, CHANNELS)
        w[0, :OBS] = 0.0
        w[0, OBS] = cfg.action_weight
        self.register_buffer("loss_w", w / w.mean(), persistent=False)
        self._schedule: NoiseSchedule | None = None

    def schedule(self, device: torch.device | str | None = None) -> NoiseSchedule:
        dev = device if device is not None else self.normalizer.obs_mean.device
        if self._schedule is None or self._schedule.device != torch.device(dev):
            self._schedule = NoiseSchedule(self.cfg.n_diffusion_steps, self.cfg.beta_schedule, dev)
        return self._schedule

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "act", "y")

    def to_model_space(self, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Raw (B, H, 4) observations and (B, H) demands -> normalised (B, H, 5)."""
        n = self.normalizer
        return torch.cat([n.obs(x), n.act(act)[..., None]], dim=-1)

    def loss(self, batch, generator=None):
        cfg = self.cfg
        z0 = self.to_model_space(batch["x"], batch["act"])
        b, h, _ = z0.shape
        sch = self.schedule(z0.device)
        idx = torch.randint(0, cfg.n_diffusion_steps, (b,), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        zk = pin_first_obs(z0[:, 0, :OBS], h).apply(sch.q_sample(z0, idx, noise))
        diff = ((self.eps(zk, idx) - noise).pow(2) * self.loss_w).mean()
        value = (self.value(zk, idx) - self.normalizer.ret(batch["y"])).pow(2).mean()
        return {"loss": diff + cfg.w_value * value, "diff": diff, "value": value}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        return MADiffuserActor(self, seed=seed, **options)


class MADiffuserActor(Actor):
    """Every agent's candidate plans in one guided sampling batch; the best plan's first
    action is the agent's demand."""

    def __init__(
        self,
        model: MADiffuser,
        seed: int = 0,
        guide: float | None = None,
        candidates: int | None = None,
        solver: str = "ddpm",
        steps: int | None = None,
    ) -> None:
        cfg = model.cfg
        self.model = model
        self.guide = cfg.guidance_scale if guide is None else float(guide)
        if not np.isfinite(self.guide):
            raise ValueError(f"guide: must be a finite number (got {self.guide})")
        self.candidates = cfg.candidates if candidates is None else int(candidates)
        if self.candidates < 1:
            raise ValueError(f"candidates: must be >= 1 (got {self.candidates})")
        self.solver = solver
        self.steps = check_solver(model.schedule(), solver, steps)
        self.seed = int(seed)
        self.generator = torch.Generator(device=model.device).manual_seed(self.seed)
        k = cfg.n_diffusion_steps if solver == "ddpm" else self.steps
        self.label = f"MA-Diffuser ({solver} {k}, {self.candidates} candidates)"

    def reset(self, n_agents: int) -> None:
        self.generator.manual_seed(self.seed)

    def _value(self, z: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # Diffuser's t_stopgrad: no guidance on the last stop_grad steps (a zero gradient)
        live = (k >= self.model.cfg.stop_grad).to(z.dtype)
        return self.model.value(z, k) * live

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        m, h, c = self.model, self.model.cfg.horizon, self.candidates
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=m.device)
        if o.dim() != 2 or o.shape[1] != OBS:
            raise ValueError(f"obs: expected shape (A, {OBS}) (got {tuple(o.shape)})")
        a = o.shape[0]
        sch = m.schedule()
        shape = (a * c, h, CHANNELS)
        with torch.inference_mode():
            first = m.normalizer.obs(o).repeat_interleave(c, dim=0)
        solver, steps, guide = self.solver, self.steps, self.guide

        def build(first: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            z = sample(m.eps, sch, shape, solver=solver, steps=steps,
                       cond=pin_first_obs(first, h), value=self._value, guide=guide,
                       clip_x0=5.0, noise=noise)  # fmt: skip
            with torch.no_grad():
                if c == 1:
                    return z
                k0 = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
                best = m.value(z, k0).view(a, c).argmax(dim=1)
                return z.view(a, c, h, CHANNELS)[torch.arange(a, device=z.device), best]

        key = ("ma-diffuser", id(m), shape, solver, steps, guide)
        z = sample_plans(key, build, sch, shape, solver, [first], self.generator, owner=m)
        self.last_plan = z  # normalised, one row per agent (its best plan)
        with torch.inference_mode():
            act = m.normalizer.unact(z[:, 0, OBS]).clamp(0.0, m.rbs)
        return act.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "solver": self.solver, "steps": self.steps,
                "guide": self.guide, "candidates": self.candidates}  # fmt: skip
