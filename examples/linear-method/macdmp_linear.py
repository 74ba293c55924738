"""An example method from outside macdmp: each agent's demand as a linear map of its current
observation x and its neighbours' mean observation xbar (both normalised), fitted by the mean
squared error to the dataset's (normalised) actions. Modelled on ``macdmp.baselines.bc``.

Two ways to make it known to every ``macdmp`` command (see README.md):

- installed (``pip install examples/linear-method``): the entry point ``my-linear`` of the group
  ``macdmp.methods`` in pyproject.toml names the class, imported when first used;
- not installed, this file's folder on ``PYTHONPATH``: ``macdmp --plugin macdmp_linear ...``
  imports this module, which registers the method below (for an installed copy the same
  registration is a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from macdmp.methods.base import Actor, Method, TrainConfig, register_method

NAME = "my-linear"


@dataclass(frozen=True)
class LinearConfig(TrainConfig):
    horizon: int = 1  # one frame: (x_t, xbar_t, a_t)
    use_mf: bool = True  # False: the map reads x alone (xbar's weights stay zero)
    warmup_steps: int = 0
    ema_start: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.use_mf, bool):
            raise ValueError(f"use_mf: must be true or false (got {self.use_mf!r})")


PRESETS = {
    "paper": LinearConfig(n_epochs=20, steps_per_epoch=1000, batch_size=256, lr=1e-3),
    "demo": LinearConfig(
        n_epochs=2, steps_per_epoch=250, batch_size=256, lr=1e-2, log_every=50, ckpt_every=250
    ),
}


class LinearMethod(Method):
    name = NAME  # must be the registered name: run folders record it
    version = 1
    config_class = LinearConfig
    presets = PRESETS
    loss_names = ("loss",)

    def __init__(self, cfg: LinearConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        f = lambda k: torch.as_tensor(np.asarray(stats[k], dtype=np.float32))  # noqa: E731
        self.register_buffer("in_mean", torch.cat([f("obs_mean"), f("mf_mean")]))
        self.register_buffer("in_std", torch.cat([f("obs_std"), f("mf_std")]).clamp(min=1e-6))
        self.register_buffer("act_mean", f("act_mean"))
        self.register_buffer("act_std", f("act_std").clamp(min=1e-6))
        self.register_buffer("mask", torch.tensor([1.0] * 4 + [float(cfg.use_mf)] * 4))
        self.linear = nn.Linear(8, 1)

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "xbar", "act")

    def _normalised(self, x: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        z = (torch.cat([x, xbar], dim=-1) - self.in_mean) / self.in_std
        return self.linear(z * self.mask).squeeze(-1)

    def forward(self, x: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        """Raw observations and mean fields (..., 4) -> demands in RBs (unclipped)."""
        return self._normalised(x, xbar) * self.act_std + self.act_mean

    def loss(self, batch, generator=None):
        pred = self._normalised(batch["x"][:, 0], batch["xbar"][:, 0])
        target = (batch["act"][:, 0] - self.act_mean) / self.act_std
        return {"loss": (pred - target).pow(2).mean()}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        if options:
            raise ValueError(f"{NAME} takes no options (got {sorted(options)})")
        return LinearActor(self)


class LinearActor(Actor):
    label = "Linear"

    def __init__(self, model: LinearMethod) -> None:
        self.model = model

    @torch.inference_mode()
    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        dev = self.model.device
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=dev)
        m = torch.as_tensor(np.asarray(mean_field), dtype=torch.float32, device=dev)
        return self.model(o, m).clamp(0.0, self.model.rbs).double().cpu().numpy()


# `--plugin macdmp_linear` (or MACDMP_PLUGINS=macdmp_linear): registered at import. Installed,
# the entry point registered the same class already, and this is a no-op.
register_method(NAME, LinearMethod)
