"""PettingZoo `ParallelEnv` over one network of the batched core (a thin adapter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .config import ScenarioConfig, load_scenario
from .core import ActionError, BatchedNetworks


class MFTDMAEnv(ParallelEnv):
    """Each node is an agent; every step is one 5 ms frame.

    observation: [gen, gen_max, tran, tran_max] (packets), the agent's own queues;
    action: the number of RBs requested, a real number in [0, M x L];
    reward: minus the mean delay (ms) of the packets delivered to the node this frame.
    `infos[agent]["mean_field"]` is the mean of its 1-hop neighbours' observations
    (the only message MA-CDMP exchanges) and `infos[agent]["grant"]` its RBs this frame.
    """

    metadata = {"name": "macdmp_mftdma_v0", "render_modes": []}

    def __init__(
        self,
        scenario: str | Path | ScenarioConfig = "n9-2to7",
        rf: str | None = None,
        seed: int = 0,
        frames: int | None = None,
    ):
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
        return self._obs_dict(obs), self._infos(obs, np.zeros(len(self.agents), dtype=np.int64))

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
        infos = self._infos(obs, res.grants[0])
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def mean_field(self) -> np.ndarray:
        """(N, 4) mean of each agent's 1-hop neighbours' current observations."""
        assert self.sim is not None
        return self.sim.mean_field()[0]

    def _obs_dict(self, obs: np.ndarray) -> dict:
        return {a: obs[i].copy() for i, a in enumerate(self.possible_agents)}

    def _infos(self, obs: np.ndarray, grants: np.ndarray) -> dict:
        mf = self.sim.mean_field(obs[None])[0]
        return {
            a: {"mean_field": mf[i], "grant": int(grants[i])}
            for i, a in enumerate(self.possible_agents)
        }

    def close(self) -> None:
        self.sim = None


def parallel_env(
    scenario: str | Path | ScenarioConfig = "n9-2to7",
    rf: str | None = None,
    seed: int = 0,
    frames: int | None = None,
) -> MFTDMAEnv:
    """The PettingZoo parallel environment of one MF-TDMA network."""
    return MFTDMAEnv(scenario=scenario, rf=rf, seed=seed, frames=frames)
