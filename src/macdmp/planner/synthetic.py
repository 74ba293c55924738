"""A small synthetic source with the WindowDataset interface, for tests and benchmarks.

Sequences come from a mixture of Gaussians over short trajectories: each window picks one of
``n_modes`` mean trajectories (set by its first observation), adds independent noise, and derives
the action from the observation change and the return from the observations, so every part of
MA-CDMP has something learnable. Units loosely mimic the simulator's (packets, RBs, -ms).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from macdmp.data.rewards import DEFAULT_REWARD, check_reward


class SyntheticWindows:
    """Mixture-of-Gaussians windows: ``sample(B, rng)`` -> dict of x, xbar, act, y and rtg0
    (float32; rtg0, the window's trajectory return, is its own y here)."""

    obs_dim = 4

    def __init__(
        self,
        horizon: int,
        gamma: float = 0.99,
        n_modes: int = 2,
        noise: float = 0.3,
        rbs: int = 40,
        seed: int = 0,
        reward: str = DEFAULT_REWARD,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon: must be >= 1 (got {horizon})")
        # The windows' content is the same whatever the reward; its name is what a training
        # config is checked against (a paper-steer config needs a backlog reward's windows).
        self.reward = check_reward(reward)
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
        # rtg0: a window's trajectory return (filtered training keeps the best); here its own y
        out = {"x": x.astype(f), "xbar": xbar.astype(f), "act": act.astype(f), "y": y.astype(f)}
        return {**out, "rtg0": out["y"]}

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
            "rtg_start_best": np.asarray(np.quantile(d["y"], 0.9), dtype=f),
        }

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of windows in raw units (the WindowDataset contract)."""
        return self._draw(batch_size, rng)

    def torch_sampler(
        self, device: torch.device | str, keys: tuple[str, ...] = ("x", "xbar", "act", "rew", "y")
    ) -> _TorchSynthetic:
        """The same distribution drawn by torch on ``device`` (the TorchWindows contract)."""
        return _TorchSynthetic(self, torch.device(device), tuple(keys))


class _TorchSynthetic:
    def __init__(self, src: SyntheticWindows, device: torch.device, keys: tuple[str, ...]):
        self.src, self.device, self.keys = src, device, keys
        self.modes = torch.as_tensor(src.modes, dtype=torch.float32, device=device)
        self.disc = torch.as_tensor(
            src.gamma ** np.arange(src.horizon), dtype=torch.float32, device=device
        )

    def sample(self, b: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if any(k.startswith("j") for k in self.keys):
            return self._joint(b, generator)
        return self._single(b, generator)

    def _joint(self, b: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Joint windows (``macdmp.data.windows``) of 9 independent agents; every other
        window is an 8-agent network padded to 9."""
        n = 9
        one = self._single(b * n, generator)
        mask = torch.ones(b, n, device=self.device)
        mask[::2, -1] = 0.0
        out = {"jx": one["x"].view(b, n, -1, 4), "jact": one["act"].view(b, n, -1),
               "jy": one["y"].view(b, n), "jmask": mask,
               "jself": torch.zeros(b, dtype=torch.long, device=self.device)}  # fmt: skip
        return {k: out[k] for k in self.keys}

    def _single(self, b: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        s, dev = self.src, self.device
        m = torch.randint(0, len(self.modes), (b,), generator=generator, device=dev)
        shape = (b, s.horizon, s.obs_dim)
        z = self.modes[m] + s.noise * torch.randn(shape, generator=generator, device=dev)
        zbar = s.mf_gain * self.modes[m]
        zbar = zbar + s.noise * torch.randn(shape, generator=generator, device=dev)
        x = s.offset + s.scale * z
        xbar = s.offset + s.scale * zbar
        dz = torch.diff(z[..., 0], dim=1, append=z[:, -1:, 0])
        act = (s.rbs / 2 + 5.0 * dz).clamp(0, s.rbs)
        r = -x[..., 0].abs() - 0.5 * xbar[..., 1].abs()
        y = r @ self.disc
        out = {"x": x, "xbar": xbar, "act": act, "rew": r, "y": y, "rtg0": y}
        return out if any(k.startswith("j") for k in self.keys) else {k: out[k] for k in self.keys}
