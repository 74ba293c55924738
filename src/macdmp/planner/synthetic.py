"""A small synthetic source with the WindowDataset interface, for tests and benchmarks.

Sequences come from a mixture of Gaussians over short trajectories: each window picks one of
``n_modes`` mean trajectories (set by its first observation), adds independent noise, and derives
the action from the observation change and the return from the observations, so every part of
MA-CDMP has something learnable. Units loosely mimic the simulator's (packets, RBs, -ms).
"""

from __future__ import annotations

import hashlib

import numpy as np


class SyntheticWindows:
    """Mixture-of-Gaussians windows: ``sample(B, rng)`` -> dict of x, xbar, act, y (float32)."""

    obs_dim = 4

    def __init__(
        self,
        horizon: int,
        gamma: float = 0.99,
        n_modes: int = 2,
        noise: float = 0.3,
        rbs: int = 40,
        seed: int = 0,
    ) -> None:
        if horizon < 2:
            raise ValueError(f"horizon: must be >= 2 (got {horizon})")
        self.horizon = horizon
        self.gamma = gamma
        self.rbs = rbs
        self.noise = noise
        g = np.random.default_rng(seed)
        t = np.linspace(0.0, 1.0, horizon)[:, None]
        # Mode m: a level plus a per-dimension linear trend, in units of ~10 packets.
        level = g.normal(0, 2.0, size=(n_modes, 1, self.obs_dim))
        trend = g.normal(0, 1.0, size=(n_modes, 1, self.obs_dim))
        self.modes = (level + trend * t[None]).astype(np.float64)  # (M, H, 4), normalised units
        self.mf_gain = 0.5
        self.scale, self.offset = 10.0, 20.0
        self.fingerprint = hashlib.sha256(
            f"synthetic:{horizon}:{gamma}:{n_modes}:{noise}:{rbs}:{seed}".encode()
        ).hexdigest()[:16]
        self.stats = self._estimate_stats()

    def _draw(self, b: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        m = rng.integers(0, len(self.modes), size=b)
        z = self.modes[m] + self.noise * rng.standard_normal((b, self.horizon, self.obs_dim))
        zbar = self.mf_gain * self.modes[m] + self.noise * rng.standard_normal(z.shape)
        x = self.offset + self.scale * z
        xbar = self.offset + self.scale * zbar
        # Action: RBs that would produce the change in the first dimension (t -> t+1).
        dz = np.diff(z[..., 0], axis=1, append=z[:, -1:, 0])
        act = np.clip(self.rbs / 2 + 5.0 * dz, 0, self.rbs)
        r = -np.abs(x[..., 0]) - 0.5 * np.abs(xbar[..., 1])  # "minus delay"
        y = (r * self.gamma ** np.arange(self.horizon)).sum(axis=1)
        f = np.float32
        return {"x": x.astype(f), "xbar": xbar.astype(f), "act": act.astype(f), "y": y.astype(f)}

    def _estimate_stats(self) -> dict[str, np.ndarray]:
        d = self._draw(20000, np.random.default_rng(12345))
        f = np.float32
        return {
            "obs_mean": d["x"].reshape(-1, 4).mean(0).astype(f),
            "obs_std": d["x"].reshape(-1, 4).std(0).astype(f),
            "mf_mean": d["xbar"].reshape(-1, 4).mean(0).astype(f),
            "mf_std": d["xbar"].reshape(-1, 4).std(0).astype(f),
            "act_mean": np.asarray(d["act"].mean(), dtype=f),
            "act_std": np.asarray(d["act"].std(), dtype=f),
            "ret_mean": np.asarray(d["y"].mean(), dtype=f),
            "ret_std": np.asarray(d["y"].std(), dtype=f),
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of windows in raw units (the WindowDataset contract)."""
        return self._draw(batch_size, rng)
