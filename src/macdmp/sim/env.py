"""PettingZoo `ParallelEnv` over one network of the batched core (a thin adapter)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt  # the backend is chosen at the first window, not here
import numpy as np
from gymnasium import logger, spaces
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pettingzoo import ParallelEnv

from .config import ScenarioConfig, load_scenario
from .core import ActionError, BatchedNetworks


class MFTDMAEnv(ParallelEnv):
    """Each node is an agent; every step is one 5 ms frame.

    observation: [gen, gen_max, tran, tran_max] (packets), the agent's own queues;
    action: the number of RBs requested, a real number in [0, M x L];
    reward: minus the mean delay (ms) of the packets delivered to the node this frame.

    `infos[agent]` holds what happened at the node this frame:
      "mean_field": the mean of its 1-hop neighbours' observations (the only message MA-CDMP
      exchanges); "grant": its RBs; "delivered": packets that reached it as their destination;
      "delay_ms": their mean end-to-end delay (NaN when none arrived); "dropped": packets lost
      at it (full queue or retry limit).

    render_mode: None, "rgb_array" (`render()` returns an (H, W, 3) uint8 image of the topology
    with each node's queue levels and granted RBs) or "human" (the same image in a window,
    redrawn every step; needs a display).
    """

    metadata = {
        "name": "macdmp_mftdma_v0",
        "render_modes": ["human", "rgb_array"],
        "render_fps": 20,
    }

    def __init__(
        self,
        scenario: str | Path | ScenarioConfig = "n9-2to7",
        rf: str | None = None,
        seed: int = 0,
        frames: int | None = None,
        render_mode: str | None = None,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: must be None or one of {self.metadata['render_modes']} "
                f"(got {render_mode!r})"
            )
        if render_mode == "human":
            _check_display()
        self.render_mode = render_mode
        self.cfg = load_scenario(scenario, rf=rf)
        if frames is not None:
            self.cfg = self.cfg.replace(episode_frames=frames)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
        self._base_seed = int(seed)
        self._episode = 0
        n = self.cfg.n_nodes
        self.possible_agents = [f"node_{i}" for i in range(n)]
        self.agents: list[str] = []
        cap = float(self.cfg.queue_capacity)
        self._obs_space = spaces.Box(0.0, cap, shape=(4,), dtype=np.float32)
        self._act_space = spaces.Box(0.0, float(self.cfg.rbs), shape=(1,), dtype=np.float32)
        self.sim: BatchedNetworks | None = None
        self.frame = 0
        self._grants = np.zeros(n, dtype=np.int64)
        self._window = None  # the "human" mode figure

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Box:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        """A new network: from `seed` if given, else the next seed after the last episode's."""
        if seed is not None:
            self._base_seed, self._episode = int(seed), 0
        net_seed = self._base_seed + self._episode
        self._episode += 1
        if self.sim is None:
            self.sim = BatchedNetworks(self.cfg, [net_seed])
        else:
            self.sim.reset([net_seed])
        self.agents = list(self.possible_agents)
        self.frame = 0
        obs = self.sim.obs[0]
        n = len(self.agents)
        self._grants = np.zeros(n, dtype=np.int64)
        zeros = np.zeros(n)
        infos = self._infos(obs, self._grants, zeros, np.full(n, np.nan), zeros)
        if self.render_mode == "human":
            self.render()
        return self._obs_dict(obs), infos

    def step(self, actions: dict):
        if self.sim is None or not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.possible_agents]
        if missing or unknown:
            raise ActionError(
                f"actions: need one entry per agent; missing {missing}, unknown {unknown}"
            )
        demands = np.empty((1, len(self.agents)))
        for i, agent in enumerate(self.agents):
            a = np.asarray(actions[agent], dtype=np.float64)
            if a.size != 1:
                raise ActionError(f"actions[{agent!r}]: expected one number of RBs, got {a.shape}")
            demands[0, i] = a.reshape(())
        res = self.sim.step(demands)
        self.frame += 1
        obs = res.obs[0]
        done = self.frame >= self.cfg.episode_frames
        agents = self.agents
        observations = self._obs_dict(obs)
        rewards = {a: float(res.reward[0, i]) for i, a in enumerate(agents)}
        terminations = {a: False for a in agents}
        truncations = {a: done for a in agents}
        deliv = res.delivered_to[0]
        delay = np.where(deliv > 0, -res.reward[0], np.nan)
        self._grants = res.grants[0].copy()
        infos = self._infos(obs, self._grants, deliv, delay, res.dropped_at[0])
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def mean_field(self) -> np.ndarray:
        """(N, 4) mean of each agent's 1-hop neighbours' current observations."""
        assert self.sim is not None
        return self.sim.mean_field()[0]

    def _obs_dict(self, obs: np.ndarray) -> dict:
        return {a: obs[i].copy() for i, a in enumerate(self.possible_agents)}

    def _infos(self, obs, grants, delivered, delay_ms, dropped) -> dict:
        mf = self.sim.mean_field(obs[None])[0]
        return {
            a: {
                "mean_field": mf[i],
                "grant": int(grants[i]),
                "delivered": int(delivered[i]),
                "delay_ms": float(delay_ms[i]),
                "dropped": int(dropped[i]),
            }
            for i, a in enumerate(self.possible_agents)
        }

    def render(self) -> np.ndarray | None:
        """The network now: an RGB array ("rgb_array"), a window ("human"), or None."""
        if self.render_mode is None:
            logger.warn(
                "render() does nothing without a render mode; create the env with "
                'render_mode="rgb_array" (an image per call) or render_mode="human" (a window)'
            )
            return None
        if self.sim is None:
            raise RuntimeError("render() called before reset()")
        image = draw_network(self.sim, self._grants, self.frame, self.cfg)
        if self.render_mode == "rgb_array":
            return image
        self._show(image)
        return None

    def _show(self, image: np.ndarray) -> None:
        if self._window is None:
            if plt.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
                raise RuntimeError(
                    f'render_mode="human": matplotlib\'s backend {plt.get_backend()!r} cannot '
                    'open a window; set MPLBACKEND (e.g. TkAgg) or use render_mode="rgb_array"'
                )
            fig, ax = plt.subplots(figsize=(image.shape[1] / 100, image.shape[0] / 100))
            ax.set_axis_off()
            self._window = (fig, ax.imshow(image))
            fig.tight_layout(pad=0)
        else:
            self._window[1].set_data(image)
        plt.pause(1.0 / self.metadata["render_fps"])

    def close(self) -> None:
        if self._window is not None:
            plt.close(self._window[0])
            self._window = None
        self.sim = None


def _check_display() -> None:
    """A window needs a display: on Linux, an X11 or Wayland one."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise RuntimeError(
            'render_mode="human": no display (DISPLAY and WAYLAND_DISPLAY are unset); use '
            'render_mode="rgb_array" and save or show the returned images instead'
        )


def draw_network(
    sim: BatchedNetworks, grants: np.ndarray, frame: int, cfg: ScenarioConfig
) -> np.ndarray:
    """An (H, W, 3) uint8 image of network 0 of `sim`: links, nodes (red: high-rate), and per
    node its generation (g) and transit (t) queue levels as bars, and its granted RBs."""
    net = sim.networks[0]
    pos = sim.positions_m[0] / 1000.0  # where the nodes are now (they move in mobile scenarios)
    adjacency = sim.adjacency[0]
    q = sim.q_len[0]  # (N, 2): generation and transit queue lengths
    cap = float(cfg.queue_capacity)
    fig = Figure(figsize=(5.6, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.08, 0.08, 0.9, 0.84))
    n = net.n_nodes
    for i in range(n):
        for j in range(i + 1, n):
            if adjacency[i, j]:
                ax.plot(*pos[[i, j]].T, color="0.85", lw=1, zorder=1)
    area = cfg.area_m / 1000.0
    bar_w, bar_h = 0.03 * area, 0.1 * area
    for i in range(n):
        x, y = pos[i]
        ax.scatter([x], [y], s=90, c="tab:red" if net.is_high[i] else "tab:green",
                   edgecolor="k", zorder=3)  # fmt: skip
        ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=7, zorder=4)
        left = x + 0.03 * area + 2.2 * bar_w > area  # no room on the right: bars go left
        for k, colour in enumerate(("tab:blue", "tab:purple")):
            x0 = (
                x - 0.03 * area - (2 - k) * 1.1 * bar_w
                if left
                else x + 0.03 * area + k * 1.1 * bar_w
            )
            level = min(q[i, k] / cap, 1.0)
            ax.add_patch(_rect(x0, y, bar_w, bar_h, fill=False, edgecolor="0.4", lw=0.6))
            ax.add_patch(_rect(x0, y, bar_w, bar_h * level, color=colour))
        ax.annotate(f"{int(grants[i])} RB", (x, y - 0.03 * area), ha="center", va="top",
                    fontsize=7, zorder=4)  # fmt: skip
    ax.set_xlim(0, area)
    ax.set_ylim(0, area)
    ax.set_aspect("equal")
    ax.set_xlabel("x (km)")
    ax.set_ylabel("y (km)")
    ax.set_title(
        f"{cfg.name}, {cfg.rf.name} RF, frame {frame}: queues (blue: own, purple: transit; "
        f"full = {int(cap)} packets), granted RBs",
        fontsize=7,
    )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _rect(x, y, w, h, **kw):
    return Rectangle((x, y), w, h, zorder=2, **kw)


def parallel_env(
    scenario: str | Path | ScenarioConfig = "n9-2to7",
    rf: str | None = None,
    seed: int = 0,
    frames: int | None = None,
    render_mode: str | None = None,
) -> MFTDMAEnv:
    """The PettingZoo parallel environment of one MF-TDMA network."""
    return MFTDMAEnv(scenario=scenario, rf=rf, seed=seed, frames=frames, render_mode=render_mode)
