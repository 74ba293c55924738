"""MA-DD: Decision Diffuser (Ajay et al., ICLR 2023) per agent, parameters shared (DTDE).

Each agent diffuses its own H-frame observation sequence, the first frame pinned to its current
observation (inpainting), conditioned on its normalised horizon return by classifier-free
guidance: trained with the return embedding dropped for a fraction ``condition_dropout`` of the
windows, sampled with eps_uncond + w (eps_cond - eps_uncond). The action comes from MA-CDMP's
inverse dynamics f(o_t, planned o_t+1), trained jointly. The mean field is not used: an agent
acts on its own observation alone.

Condition. y, the discounted return of the agent's next H frames (the window field ``y``,
gamma 0.99, what MA-CDMP's classifier predicts), normalised by the dataset's ``ret_mean`` /
``ret_std``. At execution every agent asks for the same target (option ``target``, ms; default
the dataset's ``ret_best``, the 90% quantile of y: Decision Diffuser conditions on a return near
the top of its data). Settings: docs/baselines.md, "part 2".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from macdmp.baselines.diffusion_common import (
    ReturnConditionedActor,
    ReturnConditionedConfig,
    default_target,
    sample,
    sample_plans,
)
from macdmp.diffusion.backbones import TemporalUNet, condition_keep
from macdmp.diffusion.sampler import Conditioning
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.methods.base import Actor, Method, TrainConfig
from macdmp.methods.learners import InverseDynamics, Normalizer

OBS = 4


@dataclass(frozen=True)
class MADDConfig(ReturnConditionedConfig):
    pass


class MADD(Method):
    name = "ma-dd"
    label = "MA-DD"
    version = 1
    config_class = MADDConfig
    presets = {
        # 100 epochs x 1,000 steps (the paper); Decision Diffuser's method settings, MA-CDMP's
        # task settings (H 16, K 100, the U-Net widths): docs/baselines.md
        "paper": MADDConfig(),
        "demo": MADDConfig.demo(),
    }
    loss_names = ("loss", "diff", "inv")
    compile_modules = ("eps",)
    actor_options = ReturnConditionedActor.options
    cfg: MADDConfig

    def __init__(self, cfg: MADDConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.normalizer = Normalizer(stats, OBS)
        self.register_buffer("target", torch.tensor(default_target(stats), dtype=torch.float32))
        self.eps = TemporalUNet(cfg.horizon, OBS, cond_dim=1, **cfg.unet_kwargs())
        self.invdyn = InverseDynamics(OBS, cfg.inv_hidden, cfg.inv_layers)
        self._schedule: NoiseSchedule | None = None

    def schedule(self, device: torch.device | str | None = None) -> NoiseSchedule:
        dev = device if device is not None else self.normalizer.obs_mean.device
        if self._schedule is None or self._schedule.device != torch.device(dev):
            self._schedule = NoiseSchedule(self.cfg.n_diffusion_steps, self.cfg.beta_schedule, dev)
        return self._schedule

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "act", "y")

    def loss(self, batch, generator=None):
        n, cfg = self.normalizer, self.cfg
        z0 = n.obs(batch["x"])
        b, h, _ = z0.shape
        sch = self.schedule(z0.device)
        idx = torch.randint(0, cfg.n_diffusion_steps, (b,), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        keep = condition_keep(b, cfg.condition_dropout, generator, z0.device)
        pin = Conditioning.first_step(z0[:, 0], h)
        zk = pin.apply(sch.q_sample(z0, idx, noise))
        cond = n.ret(batch["y"])[:, None]
        diff = (self.eps(zk, idx, cond, keep) - noise)[:, 1:].pow(2).mean()
        x = batch["x"]
        pred = self.invdyn(n.obs(x[:, :-1]), n.obs(x[:, 1:]))
        inv = (pred - n.act(batch["act"][:, :-1])).pow(2).mean()
        return {"loss": diff + inv, "diff": diff, "inv": inv}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        return MADDActor(self, seed=seed, **options)


class MADDActor(ReturnConditionedActor):
    """Every agent plans from its own observation alone, all agents in one sampling batch."""

    label_name = "MA-DD"

    @torch.inference_mode()
    def _first(self, obs: np.ndarray) -> torch.Tensor:
        m = self.model
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=m.device)
        if o.dim() != 2 or o.shape[1] != OBS:
            raise ValueError(f"obs: expected shape (A, {OBS}) (got {tuple(o.shape)})")
        return o

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        m, h = self.model, self.model.cfg.horizon
        o = self._first(obs)
        a = o.shape[0]
        sch = m.schedule()
        shape = (a, h, OBS)
        with torch.inference_mode():
            first = m.normalizer.obs(o)
            cond = m.normalizer.ret(torch.full((a, 1), self.target, device=o.device))
        solver, steps, w = self.solver, self.steps, self.cfg

        def build(first: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            return sample(m.eps, sch, shape, solver=solver, steps=steps,
                          cond=Conditioning.first_step(first, h), condition=cond,
                          cfg=w, clip_x0=5.0, noise=noise)  # fmt: skip

        key = ("ma-dd", id(m), shape, solver, steps, w)
        z = sample_plans(key, build, sch, shape, solver, [first, cond], self.generator, owner=m)
        self.last_plan = z  # normalised, one row per agent (its best plan)
        with torch.inference_mode():
            n = m.normalizer
            act = n.unact(m.invdyn(n.obs(o), z[:, 1])).clamp(0.0, m.rbs)
        return act.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "solver": self.solver, "steps": self.steps,
                "cfg": self.cfg, "target": self.target}  # fmt: skip
