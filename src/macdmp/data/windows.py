"""Training windows: every agent's H-frame observation, mean-field and action windows with the
discounted horizon return (paper Eq. 13-14), sampled uniformly from a dataset file.

A window is (scenario, trajectory, agent, t) with t in [0, F - H], so that the actions and
rewards of frames t .. t+H-1 exist:
  x    (H, 4)  o_t .. o_{t+H-1} of the agent, raw units (packets)
  xbar (H, 4)  the mean of the same frames over its 1-hop neighbours (stored adjacency, Eq. 11;
               in a mobile scenario the graph of each frame, `adjacency_t`)
  act  (H,)    a_t .. a_{t+H-1} (RBs)
  rew  (H,)    r_t .. r_{t+H-1} (<= 0; ms for the paper's `delay` reward, packets for the
               backlog ones: the reward choice of ``macdmp.data.rewards``, made here)
  y    ()      sum_{k<H} gamma^k r_{t+k} (<= 0)
  rtg  (H,)    returns-to-go: the undiscounted sum of the agent's rewards from each frame of the
               window to the end of its trajectory (ms, <= 0; Decision Transformer's condition)
  rtg0 ()      the agent's whole return in the window's trajectory (its return-to-go at the first
               frame; filtered behaviour cloning keeps the windows of the best trajectories)
Joint windows (centrally trained methods, MADiff): the same frames of every agent of the
window's network, padded to the dataset's largest node count N with a mask (padded entries are
zeros and must be ignored; the window's own agent is ``jself``):
  jx    (N, H, 4)  every agent's observations     jact  (N, H)  every agent's actions
  jy    (N,)       every agent's horizon return   jmask (N,)    1 for the network's agents
  jself ()         the index of the drawn agent (an int64), so joint windows of a network are
                   drawn in proportion to its number of agents
The whole file is read into memory once (the paper-scale file is about 0.9 GB there: uint16
observations, float32 actions and rewards); windows are gathered by a compiled kernel, so the
mean field and the return are computed per sample rather than stored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np
import torch

from macdmp.data.format import (
    DatasetError,
    DatasetHeader,
    all_seeds,
    check_content,
    load_scenario_arrays,
    open_h5,
    read_header,
)
from macdmp.data.rewards import DEFAULT_REWARD, NEEDS, check_reward, frame_rewards

# Normalisation statistics come from this many windows drawn with this seed (fixed, so the
# statistics are a function of the file and (H, gamma) only).
STATS_WINDOWS = 65_536
STATS_SEED = 0
STD_FLOOR = 1e-3  # a constant dimension normalises to 0 instead of dividing by ~0
JOINT_KEYS = ("jx", "jact", "jy", "jmask", "jself")
WINDOW_KEYS = ("x", "xbar", "act", "rew", "y", "rtg", "rtg0", *JOINT_KEYS)
DEFAULT_KEYS = ("x", "xbar", "act", "rew", "y")  # what a sampler serves unless asked otherwise
RTG_BEST_QUANTILE = 0.9  # stats["rtg_start_best"]: this quantile of the trajectories' returns
RET_BEST_QUANTILE = 0.9  # stats["ret_best"]: this quantile of the windows' horizon returns y


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """(T, F, N) rewards -> (T, F, N) float32 sums from each frame to the trajectory's end."""
    r = rewards.astype(np.float64)
    return np.flip(np.cumsum(np.flip(r, axis=1), axis=1), axis=1).astype(np.float32)


@nb.njit(cache=True, nogil=True)
def _gather(obs, adj, act, rew, traj, agent, start, discounts, out_pos, x, xbar, a_out, y):
    """adj: (T, F+1, N, N), the graph of each obs row, or (T, 1, N, N) for a static one."""
    horizon = discounts.shape[0]
    n_nodes = obs.shape[2]
    per_frame = adj.shape[1] > 1
    for w in range(traj.shape[0]):
        i, n, t, o = traj[w], agent[w], start[w], out_pos[w]
        ret = 0.0
        for h in range(horizon):
            r = t + h if per_frame else 0
            deg = 0
            for j in range(n_nodes):
                if adj[i, r, n, j]:
                    deg += 1
            deg_f = np.float32(max(deg, 1))
            for d in range(4):
                x[o, h, d] = obs[i, t + h, n, d]
                s = 0
                for j in range(n_nodes):
                    if adj[i, r, n, j]:
                        s += obs[i, t + h, j, d]
                xbar[o, h, d] = np.float32(s) / deg_f
            a_out[o, h] = act[i, t + h, n]
            ret += discounts[h] * rew[i, t + h, n]
        y[o] = ret


@dataclass
class _Group:
    name: str
    obs: np.ndarray  # (T, F+1, N, 4) uint16
    adjacency: np.ndarray  # (T, N, N) bool
    actions: np.ndarray  # (T, F, N) float32
    rewards: np.ndarray  # (T, F, N) float32, the chosen reward (macdmp.data.rewards)
    seeds: np.ndarray  # (T,) int64
    starts: int  # valid starts per (trajectory, agent): F - H + 1
    adjacency_t: np.ndarray | None = None  # (T, F+1, N, N) bool: mobile scenarios only
    _rtg: np.ndarray | None = None

    @property
    def graphs(self) -> np.ndarray:
        """(T, F+1, N, N) the graph of each obs row, or (T, 1, N, N) when it never changes."""
        return self.adjacency[:, None] if self.adjacency_t is None else self.adjacency_t

    @property
    def rtg(self) -> np.ndarray:
        """(T, F, N) float32 returns-to-go, computed on first use."""
        if self._rtg is None:
            self._rtg = returns_to_go(self.rewards)
        return self._rtg

    @property
    def n_windows(self) -> int:
        t, _, n, _ = self.obs.shape
        return t * n * self.starts


class WindowDataset:
    """Uniform random windows over (trajectory, agent, t) of every scenario of a dataset."""

    obs_dim = 4

    def __init__(
        self,
        header: DatasetHeader,
        groups: list[_Group],
        horizon: int,
        gamma: float,
        reward: str = DEFAULT_REWARD,
    ):
        self.header = header
        self.horizon = horizon
        self.gamma = gamma
        self.reward = check_reward(reward)
        self._groups = groups
        rbs = {s.config.rbs for s in header.scenarios.values()}
        if len(rbs) != 1:
            raise DatasetError(f"{header.path}: scenarios disagree on M x L ({sorted(rbs)})")
        self.rbs: int = rbs.pop()
        self._offsets = np.cumsum([0] + [g.n_windows for g in groups])
        self.n_windows = int(self._offsets[-1])
        self._discounts = gamma ** np.arange(horizon, dtype=np.float64)
        self._stats: dict[str, np.ndarray] | None = None
        self.fingerprint: str = header.fingerprint()

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def scenarios(self) -> list[str]:
        return [g.name for g in self._groups]

    def scenario_configs(self) -> list:
        """The ScenarioConfig of every scenario, in file order (in-loop evaluation runs them)."""
        return [self.header.scenarios[g.name].config for g in self._groups]

    def train_seeds(self) -> np.ndarray:
        """Every trajectory's env seed (int64, sorted): evaluation must use other seeds."""
        return np.sort(np.concatenate([g.seeds for g in self._groups]))

    @property
    def n_agents_max(self) -> int:
        """The largest node count of the dataset's scenarios (joint windows are padded to it)."""
        return max(g.obs.shape[2] for g in self._groups)

    def get(self, index: np.ndarray, joint: bool = False) -> dict[str, np.ndarray]:
        """The windows with these global indices in [0, n_windows), in that order; with
        ``joint`` also the joint fields (``JOINT_KEYS``) of each window's network."""
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1:
            raise ValueError(f"index: expected a 1-D array of window indices, got {index.shape}")
        if index.size and (index.min() < 0 or index.max() >= self.n_windows):
            raise ValueError(f"index: window indices must lie in [0, {self.n_windows})")
        b, h = len(index), self.horizon
        out = {
            "x": np.empty((b, h, 4), dtype=np.float32),
            "xbar": np.empty((b, h, 4), dtype=np.float32),
            "act": np.empty((b, h), dtype=np.float32),
            "y": np.empty(b, dtype=np.float64),
            "rtg": np.empty((b, h), dtype=np.float32),
            "rtg0": np.empty(b, dtype=np.float32),
        }
        if joint:
            n_max = self.n_agents_max
            out["jx"] = np.zeros((b, n_max, h, 4), dtype=np.float32)
            out["jact"] = np.zeros((b, n_max, h), dtype=np.float32)
            out["jy"] = np.zeros((b, n_max), dtype=np.float32)
            out["jmask"] = np.zeros((b, n_max), dtype=np.float32)
            out["jself"] = np.zeros(b, dtype=np.int64)
        which = np.searchsorted(self._offsets, index, side="right") - 1
        for gi, g in enumerate(self._groups):
            pos = np.flatnonzero(which == gi)
            if pos.size == 0:
                continue
            local = index[pos] - self._offsets[gi]
            start = local % g.starts
            rest = local // g.starts
            n_nodes = g.obs.shape[2]
            agent, traj = rest % n_nodes, rest // n_nodes
            _gather(g.obs, g.graphs, g.actions, g.rewards, traj, agent, start,
                    self._discounts, pos, out["x"], out["xbar"], out["act"], out["y"])  # fmt: skip
            frames = start[:, None] + np.arange(h)
            out["rtg"][pos] = g.rtg[traj[:, None], frames, agent[:, None]]
            out["rtg0"][pos] = g.rtg[traj, 0, agent]
            if joint:
                seq = g.obs[traj[:, None], frames].astype(np.float32)  # (b, H, n, 4)
                out["jx"][pos, :n_nodes] = seq.transpose(0, 2, 1, 3)
                acts = g.actions[traj[:, None], frames]  # (b, H, n)
                out["jact"][pos, :n_nodes] = acts.transpose(0, 2, 1)
                rews = g.rewards[traj[:, None], frames].astype(np.float64)
                out["jy"][pos, :n_nodes] = np.einsum("bhn,h->bn", rews, self._discounts)
                out["jmask"][pos, :n_nodes] = 1.0
                out["jself"][pos] = agent
        out["y"] = out["y"].astype(np.float32)
        return out

    def locate(self, index: int) -> tuple[str, int, int, int]:
        """(scenario, trajectory, agent, t) of one global window index."""
        gi = int(np.searchsorted(self._offsets, index, side="right") - 1)
        g = self._groups[gi]
        local = int(index - self._offsets[gi])
        rest, t = divmod(local, g.starts)
        traj, agent = divmod(rest, g.obs.shape[2])
        return g.name, traj, agent, t

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch of windows drawn uniformly with replacement: x, xbar, act, y, rtg (float32)."""
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        return self.get(rng.integers(0, self.n_windows, size=batch_size))

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """Per-dimension mean and std of x, xbar, act and y over a fixed subsample of windows;
        the per-frame reward's mean and std (``rew_*``), the returns-to-go's (``rtg_*``) and
        the RTG_BEST_QUANTILE quantile of every (trajectory, agent)'s whole return
        (``rtg_start_best``, the closest to 0 being the best: Decision Transformer's target) and
        the RET_BEST_QUANTILE quantile of the windows' horizon returns y (``ret_best``: the
        return-conditioned diffusion baselines' default target)."""
        if self._stats is None:
            n = min(STATS_WINDOWS, self.n_windows)
            batch = self.sample(n, np.random.default_rng(STATS_SEED))
            s: dict[str, np.ndarray] = {}
            for key, name in (("x", "obs"), ("xbar", "mf"), ("act", "act"), ("y", "ret")):
                v = batch[key].astype(np.float64)
                v = v.reshape(-1, 4) if v.ndim == 3 else v.reshape(-1)
                s[f"{name}_mean"] = v.mean(axis=0).astype(np.float32)
                s[f"{name}_std"] = np.maximum(v.std(axis=0), STD_FLOOR).astype(np.float32)
            # the frame reward and the return-to-go of each window's first frame
            rew0 = np.concatenate([g.rewards.reshape(-1) for g in self._groups])
            for name, v in (("rew", rew0), ("rtg", batch["rtg"][:, 0])):
                v = v.astype(np.float64)
                s[f"{name}_mean"] = np.asarray(v.mean(), dtype=np.float32)
                s[f"{name}_std"] = np.asarray(max(v.std(), STD_FLOOR), dtype=np.float32)
            s["ret_best"] = np.asarray(
                np.quantile(batch["y"].astype(np.float64), RET_BEST_QUANTILE), dtype=np.float32
            )
            start = np.concatenate([g.rtg[:, 0].reshape(-1) for g in self._groups])
            s["rtg_start_best"] = np.asarray(
                np.quantile(start.astype(np.float64), RTG_BEST_QUANTILE), dtype=np.float32
            )
            self._stats = s
        return self._stats

    def torch_sampler(
        self, device: torch.device | str, keys: tuple[str, ...] = DEFAULT_KEYS
    ) -> TorchWindows:
        """The windows gathered by torch on ``device`` (what the trainer samples from)."""
        return TorchWindows(self, torch.device(device), keys)

    def __repr__(self) -> str:
        return (
            f"WindowDataset({str(self.path)!r}, horizon={self.horizon}, gamma={self.gamma}, "
            f"reward={self.reward!r}, scenarios={self.scenarios}, n_windows={self.n_windows})"
        )


class TorchWindows:
    """A WindowDataset's arrays on a torch device, and windows gathered there.

    ``get(index)`` returns the same windows as ``WindowDataset.get`` (as float32 tensors, only
    the requested ``keys``); ``sample(B, generator)`` draws B window indices uniformly with
    replacement on the device. Nothing here synchronises with the host, so sampling can be
    part of a captured CUDA graph. Scenarios with fewer nodes are padded to the largest N with
    nodes that are nobody's neighbour and are never drawn; the joint fields (``JOINT_KEYS``)
    carry those padded nodes as zeros with ``jmask`` 0.
    """

    def __init__(self, ds: WindowDataset, device: torch.device, keys: tuple[str, ...]):
        bad = [k for k in keys if k not in WINDOW_KEYS]
        if bad or not keys:
            raise ValueError(f"keys: {bad or keys} not window fields; use some of {WINDOW_KEYS}")
        self.keys = tuple(keys)
        self.horizon = ds.horizon
        self.n_windows = ds.n_windows
        groups = ds._groups
        n_max = max(g.obs.shape[2] for g in groups)
        f_max = max(g.obs.shape[1] for g in groups)
        big = max(int(g.obs.max(initial=0)) for g in groups)
        odt = np.int16 if big < 2**15 else np.int32
        per_frame = any(g.adjacency_t is not None for g in groups)  # then every graph per row
        obs, adj, act, rew, rtg = [], [], [], [], []
        pair_traj, pair_agent, pair_count = [], [], []
        t0 = 0
        for g in groups:
            t, f1, n, _ = g.obs.shape
            o = np.zeros((t, f_max, n_max, 4), dtype=odt)
            o[:, :f1, :n] = g.obs
            if per_frame:  # uint8 (the mean field's weights are made per window)
                a = np.zeros((t, f_max, n_max, n_max), dtype=np.uint8)
                a[:, :f1, :n, :n] = g.graphs
            else:
                a = np.zeros((t, n_max, n_max), dtype=np.float32)
                a[:, :n, :n] = g.adjacency
            ac = np.zeros((t, f_max - 1, n_max), dtype=np.float32)
            ac[:, : f1 - 1, :n] = g.actions
            rw = np.zeros_like(ac)
            rw[:, : f1 - 1, :n] = g.rewards
            obs.append(o), adj.append(a), act.append(ac), rew.append(rw)
            if {"rtg", "rtg0"} & set(keys):
                rt = np.zeros_like(ac)
                rt[:, : f1 - 1, :n] = g.rtg
                rtg.append(rt)
            # pairs in the global window order of WindowDataset: trajectory-major, then agent
            pair_traj.append(np.repeat(np.arange(t0, t0 + t), n))
            pair_agent.append(np.tile(np.arange(n), t))
            pair_count.append(np.full(t * n, g.starts))
            t0 += t
        as_t = lambda v, dt=None: torch.as_tensor(np.concatenate(v), dtype=dt, device=device)  # noqa: E731
        self._obs = as_t(obs)
        self._per_frame = per_frame
        if per_frame:
            self._adj_t = as_t(adj)  # (T, F+1, N, N) uint8
        else:
            adj_s = as_t(adj)
            deg = adj_s.sum(dim=2).clamp(min=1.0)
            self._adj_norm = adj_s / deg[..., None]  # row i: 1/deg_i on i's neighbours
        self._act = as_t(act) if {"act", "jact"} & set(keys) else None
        self._rew = as_t(rew) if {"rew", "y", "jy"} & set(keys) else None
        self._rtg = as_t(rtg) if {"rtg", "rtg0"} & set(keys) else None
        self._n_nodes = torch.as_tensor(
            np.concatenate([np.full(g.obs.shape[0], g.obs.shape[2]) for g in groups]),
            dtype=torch.long,
            device=device,
        )
        self._agents = torch.arange(n_max, device=device)
        self._pair_traj = as_t(pair_traj, torch.long)
        self._pair_agent = as_t(pair_agent, torch.long)
        ends = np.cumsum(np.concatenate(pair_count))
        self._pair_end = torch.as_tensor(ends, dtype=torch.long, device=device)
        self._pair_start = self._pair_end - as_t(pair_count, torch.long)
        self._steps = torch.arange(ds.horizon, device=device)
        self._disc = torch.as_tensor(ds._discounts, dtype=torch.float32, device=device)
        self.device = device

    def get(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The windows with these global indices, in that order (no range check)."""
        p = torch.searchsorted(self._pair_end, index, right=True)
        t = index - self._pair_start[p]
        traj, agent = self._pair_traj[p], self._pair_agent[p]
        frames = t[:, None] + self._steps  # (B, H)
        out: dict[str, torch.Tensor] = {}
        if {"x", "xbar", "jx"} & set(self.keys):
            seq = self._obs[traj[:, None], frames]  # (B, H, N, 4)
            if "jx" in self.keys:
                out["jx"] = seq.permute(0, 2, 1, 3).float()
            if "x" in self.keys:
                rows = torch.arange(len(index), device=index.device)
                out["x"] = seq[rows, :, agent].float()
            if "xbar" in self.keys:
                if self._per_frame:  # each frame's own neighbours (mobile scenarios)
                    w = self._adj_t[traj[:, None], frames, agent[:, None]].float()  # (B, H, N)
                    w = w / w.sum(dim=2, keepdim=True).clamp(min=1.0)
                    out["xbar"] = torch.einsum("bhn,bhnd->bhd", w, seq.float())
                else:
                    w = self._adj_norm[traj, agent]  # (B, N)
                    out["xbar"] = torch.einsum("bn,bhnd->bhd", w, seq.float())
        if "act" in self.keys:
            out["act"] = self._act[traj[:, None], frames, agent[:, None]]
        if "jact" in self.keys:
            out["jact"] = self._act[traj[:, None], frames].transpose(1, 2)
        if "rew" in self.keys or "y" in self.keys:
            rew = self._rew[traj[:, None], frames, agent[:, None]]
            if "rew" in self.keys:
                out["rew"] = rew
            if "y" in self.keys:
                out["y"] = rew @ self._disc
        if "jy" in self.keys:
            out["jy"] = torch.einsum("bhn,h->bn", self._rew[traj[:, None], frames], self._disc)
        if "jmask" in self.keys:
            out["jmask"] = (self._agents < self._n_nodes[traj][:, None]).float()
        if "jself" in self.keys:
            out["jself"] = agent
        if "rtg" in self.keys:
            out["rtg"] = self._rtg[traj[:, None], frames, agent[:, None]]
        if "rtg0" in self.keys:
            out["rtg0"] = self._rtg[traj, 0, agent]
        return out

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """B windows drawn uniformly with replacement, on the device."""
        index = torch.randint(
            0, self.n_windows, (batch_size,), generator=generator, device=self.device
        )
        return self.get(index)


def open_windows(
    path: str | os.PathLike, horizon: int, gamma: float, reward: str = DEFAULT_REWARD
) -> WindowDataset:
    """Read a dataset into memory and serve its H-frame training windows, their rewards (and
    so returns) built by the ``reward`` choice (``macdmp.data.rewards.REWARDS``)."""
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon: must be an integer >= 1, got {horizon!r}")
    if not np.isfinite(gamma) or not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: must be in (0, 1], got {gamma!r}")
    check_reward(reward)
    keys = ("obs", "adjacency", "actions", "rewards", "seeds")  # and adjacency_t where stored
    groups = []
    with open_h5(path) as f:
        header = read_header(f, path)
        for name, s in header.scenarios.items():
            if horizon > s.n_frames:
                raise ValueError(
                    f"horizon: {horizon} exceeds the {s.n_frames} frames of scenario {name!r} "
                    f"in {path}"
                )
            arrays = load_scenario_arrays(f, header, name)
            check_content(header, name, arrays, hashes=False)
            missing = [k for k in NEEDS[reward] if k not in arrays]
            if missing:
                raise DatasetError(
                    f"{path}: reward {reward!r} needs {missing}, which format version "
                    f"{header.format_version} files lack; re-collect the data with `macdmp collect`"
                )
            arrays["rewards"] = frame_rewards(reward, arrays)
            groups.append(
                _Group(
                    name,
                    *(arrays[k] for k in keys),
                    starts=s.n_frames - horizon + 1,
                    adjacency_t=arrays.get("adjacency_t"),
                )
            )
        seeds = all_seeds(header, f)
        if len(np.unique(seeds)) != len(seeds):
            raise DatasetError(f"{path}: two trajectories share an env seed")
    return WindowDataset(header, groups, int(horizon), float(gamma), reward)
