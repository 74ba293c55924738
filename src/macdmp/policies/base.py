"""The policy interface every allocator, the behaviour policy and every trained run share.

A policy sees the batch once per episode (`reset`) and then, every frame, the observations and
mean-field messages of all agents of all networks (`act`), and returns the demands (B, N) in RBs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from macdmp.sim.core import BatchedNetworks


class PolicyError(ValueError):
    """An unknown policy name or invalid policy option."""


class Policy:
    """Maps (observations, mean field) of B networks x N agents to demands in RBs."""

    name = "policy"
    # A decentralised policy decides per agent from (own observation, neighbours' mean) only;
    # it implements act_agents, and the evaluator batches every agent of every network into
    # one call.
    decentralized = False

    def reset(self, sim: BatchedNetworks) -> None:
        """Called once after the networks are (re)built."""
        self.rbs = sim.cfg.rbs
        self.n_nodes = sim.n_nodes
        self.batch_size = sim.batch_size

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        """Demands (B, N) in RBs from observations (B, N, 4) and mean-field messages (B, N, 4)."""
        if self.decentralized:
            return self.act_agents(obs.reshape(-1, 4), mean_field.reshape(-1, 4)).reshape(
                obs.shape[:2]
            )
        raise NotImplementedError

    def act_agents(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        """Decentralised policies: demands (A,) from per-agent obs (A, 4) and mean field (A, 4)."""
        raise NotImplementedError(f"{self.name} is not a decentralised policy")

    def describe(self) -> dict:
        """Settings worth storing next to data this policy produced."""
        return {"name": self.name}
