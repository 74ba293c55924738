"""Behaviour cloning: the simplest learned method (docs/guide/adding-a-method.md builds on it).

Each agent maps its own current observation (normalised) to the demand its data took, by an
MLP with parameters shared across agents and a mean-squared error on the normalised action.
Decentralised: an agent acts on its own observation alone (the mean field is ignored), as the
paper's DTDE baselines do; ``use_mf=True`` also gives it its neighbours' mean observation, the
message MA-CDMP conditions on (the adaptive study's information lever, docs/adaptive-study.md).

``filtered=True`` is filtered behaviour cloning (%BC, the sanity line of offline RL): the loss
keeps only the windows of the best 10% of the data's (trajectory, agent) returns, those at or
above the data's ``rtg_start_best`` (the 90% quantile of the whole returns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from macdmp.methods.base import DEMO_SCHEDULE, OMIT_AT_DEFAULT, Actor, Method, TrainConfig


@dataclass(frozen=True)
class BCConfig(TrainConfig):
    # use_mf came after the first results: a run without it keeps its recorded configuration
    omit_at_default: ClassVar[dict[str, Any]] = {**OMIT_AT_DEFAULT, "use_mf": False}

    horizon: int = 1  # one frame: (o_t, a_t)
    hidden: int = 256
    layers: int = 2
    warmup_steps: int = 0
    ema_start: int = 0
    # %BC: clone only the windows of the best 10% of (trajectory, agent) returns
    filtered: bool = False
    # the neighbours' mean observation as 4 more inputs (default off: own observation only)
    use_mf: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1 (got {self.hidden})")
        if self.layers < 1:
            raise ValueError(f"layers: must be >= 1 (got {self.layers})")


class BehaviourCloning(Method):
    name = "bc"
    version = 1
    config_class = BCConfig
    presets = {
        "paper": BCConfig(n_epochs=20, steps_per_epoch=1000, batch_size=256, lr=1e-3),
        "demo": BCConfig(
            hidden=64,
            n_epochs=4,
            batch_size=256,
            lr=1e-3,
            **DEMO_SCHEDULE,
        ),
    }
    loss_names = ("loss",)

    def __init__(self, cfg: BCConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        f = lambda k: torch.as_tensor(np.asarray(stats[k], dtype=np.float32))  # noqa: E731
        self.register_buffer("obs_mean", f("obs_mean"))
        self.register_buffer("obs_std", f("obs_std").clamp(min=1e-6))
        self.register_buffer("act_mean", f("act_mean"))
        self.register_buffer("act_std", f("act_std").clamp(min=1e-6))
        if cfg.use_mf:  # only then: run folders without the mean field keep their layout
            self.register_buffer("mf_mean", f("mf_mean"))
            self.register_buffer("mf_std", f("mf_std").clamp(min=1e-6))
        # %BC's threshold, the 90% quantile of the whole returns (a number, not a weight: BC
        # run folders keep their layout)
        self.rtg_best = float(np.asarray(stats["rtg_start_best"])) if cfg.filtered else -np.inf
        mods: list[nn.Module] = []
        width = 8 if cfg.use_mf else 4
        for _ in range(cfg.layers):
            mods += [nn.Linear(width, cfg.hidden), nn.ReLU()]
            width = cfg.hidden
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        keys = ("x", "xbar", "act") if getattr(cfg, "use_mf", False) else ("x", "act")
        return (*keys, "rtg0") if getattr(cfg, "filtered", False) else keys

    def inputs(self, obs: torch.Tensor, mean_field: torch.Tensor | None) -> torch.Tensor:
        """The network's normalised input: the observation (..., 4), and with ``use_mf`` the
        mean field (..., 4) beside it."""
        z = (obs - self.obs_mean) / self.obs_std
        if not self.cfg.use_mf:
            return z
        if mean_field is None:
            raise ValueError("mean_field: this BC model uses the mean field (use_mf=True)")
        return torch.cat([z, (mean_field - self.mf_mean) / self.mf_std], dim=-1)

    def forward(self, obs: torch.Tensor, mean_field: torch.Tensor | None = None) -> torch.Tensor:
        """Raw observations (..., 4) (and mean fields, with ``use_mf``) -> demands in RBs
        (unclipped)."""
        z = self.net(self.inputs(obs, mean_field)).squeeze(-1)
        return z * self.act_std + self.act_mean

    def loss(self, batch, generator=None):
        xbar = batch["xbar"][:, 0] if self.cfg.use_mf else None
        pred = self.net(self.inputs(batch["x"][:, 0], xbar)).squeeze(-1)
        target = (batch["act"][:, 0] - self.act_mean) / self.act_std
        err = (pred - target).pow(2)
        if not self.cfg.filtered:
            return {"loss": err.mean()}
        keep = (batch["rtg0"] >= self.rtg_best).float()  # no host sync: a weighted mean
        return {"loss": (err * keep).sum() / keep.sum().clamp(min=1.0)}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        if options:
            raise ValueError(f"bc takes no options (got {sorted(options)})")
        return _BCActor(self)


class _BCActor(Actor):
    def __init__(self, model: BehaviourCloning) -> None:
        self.model = model
        self.label = ("%BC" if model.cfg.filtered else "BC") + (" + MF" if model.cfg.use_mf else "")

    @torch.inference_mode()
    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        dev = self.model.device
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=dev)
        mf = None
        if self.model.cfg.use_mf:
            mf = torch.as_tensor(np.asarray(mean_field), dtype=torch.float32, device=dev)
        return self.model(o, mf).clamp(0.0, self.model.rbs).double().cpu().numpy()
