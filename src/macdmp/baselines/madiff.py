"""MADiff (Zhu et al., NeurIPS 2024): a diffusion model of every agent's trajectory of one
network at once, trained centrally (CTDE), executed per agent.

Training. A joint window holds the H-frame observations of all agents of one network (the
window fields ``jx``, ``jact``, ``jy``, ``jmask``, ``jself`` of ``macdmp.data.windows``):
networks of 8 and 9 nodes share a batch, padded to 9 with a mask. The noise model is one
temporal U-Net shared by every agent with attention between the agents on each skip connection
(``AgentAttentionUNet``); padded agents are never attended to, and they are left out of every
loss. The model is conditioned by classifier-free guidance on the team's return: the mean over
the network's agents of their horizon returns y, normalised by ``ret_mean`` / ``ret_std``,
dropped for a fraction ``condition_dropout`` of the windows. Actions come from MA-CDMP's inverse
dynamics, shared by every agent, trained jointly.

Decentralised execution (MADiff's decentralised variant, teammate modelling). Agent i knows its
own observation and the size N of its network, nothing else: it samples a joint plan of N agents
with its own current observation pinned at frame 0 of its slot and every other agent's
trajectory, their current observations included, generated; it acts on its own slot's planned
o_t+1. Training pins the drawn agent's first observation only (``jself``), as execution does.
No agent index is embedded, so the slot an agent takes does not matter (slot 0). The evaluator
tells the actor each agent's N (``Actor.set_team_sizes``); without it an agent assumes
``team_size`` nodes.
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
from macdmp.diffusion.backbones import AgentAttentionUNet, condition_keep
from macdmp.diffusion.sampler import Conditioning
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.methods.base import Actor, Method, TrainConfig
from macdmp.methods.learners import InverseDynamics, Normalizer

OBS = 4


@dataclass(frozen=True)
class MADiffConfig(ReturnConditionedConfig):
    heads: int = 4  # attention heads between agents (MADiff's reference)
    team_size: int = 9  # the N an agent assumes when the evaluator does not say

    def __post_init__(self) -> None:
        super().__post_init__()
        self.need(self.heads >= 1 and self.dim % self.heads == 0, "heads", ">= 1, dividing dim")
        self.need(self.team_size >= 1, "team_size", ">= 1")


def pin_self(first: torch.Tensor, slot: torch.Tensor, n: int, horizon: int) -> Conditioning:
    """Pin frame 0 of agent ``slot`` (B,) of joint (B, n, horizon, 4) plans to ``first`` (B, 4)."""
    b = first.shape[0]
    one = slot[:, None] == torch.arange(n, device=slot.device)  # (B, n), no host sync
    t0 = torch.arange(horizon, device=first.device) == 0  # no host-to-device copy (capturable)
    mask = one[:, :, None, None] & t0[None, None, :, None]  # (B, n, H, 1)
    values = first[:, None, None, :].expand(b, n, horizon, OBS)
    return Conditioning(mask, values)


class MADiff(Method):
    name = "madiff"
    label = "MADiff"
    version = 1
    config_class = MADiffConfig
    presets = {
        # 100 epochs x 1,000 steps (the paper); a batch of 32 joint windows (up to 288 agents)
        "paper": MADiffConfig(),
        "demo": MADiffConfig.demo(batch_size=16),
    }
    loss_names = ("loss", "diff", "inv")
    compile_modules = ("eps",)
    actor_options = ReturnConditionedActor.options
    cfg: MADiffConfig

    def __init__(self, cfg: MADiffConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.normalizer = Normalizer(stats, OBS)
        self.register_buffer("target", torch.tensor(default_target(stats), dtype=torch.float32))
        self.eps = AgentAttentionUNet(
            cfg.horizon, OBS, cond_dim=1, heads=cfg.heads, **cfg.unet_kwargs()
        )
        self.invdyn = InverseDynamics(OBS, cfg.inv_hidden, cfg.inv_layers)
        self._schedule: NoiseSchedule | None = None

    def schedule(self, device: torch.device | str | None = None) -> NoiseSchedule:
        dev = device if device is not None else self.normalizer.obs_mean.device
        if self._schedule is None or self._schedule.device != torch.device(dev):
            self._schedule = NoiseSchedule(self.cfg.n_diffusion_steps, self.cfg.beta_schedule, dev)
        return self._schedule

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("jx", "jact", "jy", "jmask", "jself")

    def team_condition(self, jy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) horizon returns and mask -> (B, 1) the normalised mean over real agents."""
        team = (jy * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.normalizer.ret(team)[:, None]

    def loss(self, batch, generator=None):
        n, cfg = self.normalizer, self.cfg
        mask = batch["jmask"]
        real = mask[:, :, None, None]
        z0 = n.obs(batch["jx"]) * real  # padded agents: zeros, whatever the data held
        b, agents, h, _ = z0.shape
        dev = z0.device
        sch = self.schedule(dev)
        idx = torch.randint(0, cfg.n_diffusion_steps, (b,), generator=generator, device=dev)
        noise = torch.randn(z0.shape, generator=generator, device=dev)
        keep = condition_keep(b, cfg.condition_dropout, generator, dev)
        pin = pin_self(z0[torch.arange(b, device=dev), batch["jself"], 0], batch["jself"],
                       agents, h)  # fmt: skip
        zk = pin.apply(sch.q_sample(z0, idx, noise))
        cond = self.team_condition(batch["jy"], mask)
        err = (self.eps(zk, idx, mask, cond, keep) - noise).pow(2)
        w = real * (~pin.mask).to(z0.dtype)  # real agents, the pinned entry left out
        diff = (err * w).sum() / (w.sum() * OBS).clamp(min=1.0)
        x = batch["jx"]
        pred = self.invdyn(n.obs(x[:, :, :-1]), n.obs(x[:, :, 1:]))  # (B, N, H-1)
        inv_err = (pred - n.act(batch["jact"][:, :, :-1])).pow(2) * mask[:, :, None]
        inv = inv_err.sum() / (mask.sum() * (h - 1)).clamp(min=1.0)
        return {"loss": diff + inv, "diff": diff, "inv": inv}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        return MADiffActor(self, seed=seed, **options)


class MADiffActor(ReturnConditionedActor):
    """Each agent samples its own joint plan of its whole network from its own observation."""

    label_name = "MADiff"
    sizes: np.ndarray | None = None

    def reset(self, n_agents: int) -> None:
        super().reset(n_agents)
        self.sizes = None

    def set_team_sizes(self, sizes: np.ndarray) -> None:
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.ndim != 1 or (sizes < 1).any():
            raise ValueError("sizes: expected a (A,) array of node counts >= 1")
        self.sizes = sizes

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        m, h = self.model, self.model.cfg.horizon
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=m.device)
        if o.dim() != 2 or o.shape[1] != OBS:
            raise ValueError(f"obs: expected shape (A, {OBS}) (got {tuple(o.shape)})")
        a = o.shape[0]
        sizes = np.full(a, m.cfg.team_size) if self.sizes is None else self.sizes
        if len(sizes) != a:
            raise ValueError(f"act: {a} agents, but team sizes were given for {len(sizes)}")
        n = int(sizes.max())
        dev = o.device
        mask = (np.arange(n)[None, :] < sizes[:, None]).astype(np.float32)
        mask_t = torch.as_tensor(mask, device=dev)
        sch = m.schedule()
        shape = (a, n, h, OBS)
        with torch.inference_mode():
            first = m.normalizer.obs(o)
            cond = m.normalizer.ret(torch.full((a, 1), self.target, device=dev))
        solver, steps, w = self.solver, self.steps, self.cfg

        def build(first, cond, mask, noise):
            # every tensor the sampling reads is an input or made here: a tensor made outside
            # would be freed after the capture and the graph's replays would read reused memory
            slot = torch.zeros(a, dtype=torch.long, device=first.device)

            def eps(x, k, c, keep):  # the CFG call doubles the batch: so does the mask
                return m.eps(x, k, mask.repeat(x.shape[0] // a, 1), c, keep)

            return sample(eps, sch, shape, solver=solver, steps=steps,
                          cond=pin_self(first, slot, n, h), condition=cond, cfg=w,
                          clip_x0=5.0, noise=noise)  # fmt: skip

        key = ("madiff", id(m), shape, solver, steps, w)
        z = sample_plans(
            key, build, sch, shape, solver, [first, cond, mask_t], self.generator, owner=m
        )
        self.last_plan = z  # normalised, one row per agent (its best plan)
        with torch.inference_mode():
            nm = m.normalizer
            act = nm.unact(m.invdyn(nm.obs(o), z[:, 0, 1])).clamp(0.0, m.rbs)
        return act.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "solver": self.solver, "steps": self.steps,
                "cfg": self.cfg, "target": self.target}  # fmt: skip
