"""Parts that learned methods share: the normaliser of the data's statistics, the inverse
dynamics model and the default target return of return-conditioned sampling.

MA-CDMP (``macdmp.planner``) and the diffusion baselines (``macdmp.baselines``) build on these;
they live here, one layer below both, so that no baseline imports the planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

STAT_KEYS = (
    "obs_mean",
    "obs_std",
    "mf_mean",
    "mf_std",
    "act_mean",
    "act_std",
    "ret_mean",
    "ret_std",
)
RET_BEST_FALLBACK_Z = 1.2816  # the 90% quantile of a normal, when a source has no ret_best


class Normalizer(nn.Module):
    """Per-dimension z-scoring of observations, mean field, actions and returns (dataset stats)."""

    def __init__(self, stats: Mapping[str, Any], obs_dim: int) -> None:
        super().__init__()
        missing = [k for k in STAT_KEYS if k not in stats]
        if missing:
            raise ValueError(f"stats: missing {missing}; a dataset must provide {STAT_KEYS}")
        for k in STAT_KEYS:
            v = torch.as_tensor(np.asarray(stats[k], dtype=np.float32))
            want = (obs_dim,) if k.startswith(("obs", "mf")) else ()
            if tuple(v.shape) != want:
                raise ValueError(f"stats: {k} must have shape {want} (got {tuple(v.shape)})")
            if k.endswith("std"):
                # A constant dimension would divide by zero; treat it as unit scale.
                v = torch.where(v > 1e-6, v, torch.ones_like(v))
            self.register_buffer(k, v)

    def stats(self) -> dict[str, np.ndarray]:
        """The statistics as float32 numpy arrays (what the checkpoint records)."""
        return {k: getattr(self, k).detach().cpu().numpy() for k in STAT_KEYS}

    def obs(self, o: torch.Tensor) -> torch.Tensor:
        return (o - self.obs_mean) / self.obs_std

    def unobs(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.obs_std + self.obs_mean

    def mf(self, o: torch.Tensor) -> torch.Tensor:
        return (o - self.mf_mean) / self.mf_std

    def unmf(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.mf_std + self.mf_mean

    def act(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.act_mean) / self.act_std

    def unact(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.act_std + self.act_mean

    def ret(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.ret_mean) / self.ret_std

    def unret(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.ret_std + self.ret_mean


class InverseDynamics(nn.Module):
    """f_phi: normalised (o_t, o_t+1) -> normalised action, an MLP. ``extra``: the width of
    what it reads besides the two observations (MA-CDMP's ``inv_mf``), concatenated to them."""

    def __init__(self, obs_dim: int, hidden: int, layers: int, extra: int = 0) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = 2 * obs_dim + extra
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, o_t: torch.Tensor, o_next: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([o_t, o_next], dim=-1)).squeeze(-1)


def default_target(stats: Mapping[str, Any]) -> float:
    """The default target return (raw units) of return-conditioned sampling: the data's
    ``ret_best`` (the 90% quantile of the horizon returns y), or mean + 1.28 std for a source
    without it (Decision Diffuser conditions on a return near the top of its data)."""
    if "ret_best" in stats:
        return float(np.asarray(stats["ret_best"]))
    mean, std = (float(np.asarray(stats[k])) for k in ("ret_mean", "ret_std"))
    return mean + RET_BEST_FALLBACK_Z * std
