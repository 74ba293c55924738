"""Non-learning RB allocators and the behaviour policy, behind one batched policy interface.

A policy sees the batch once per episode (`reset`) and then, every frame, the observations and
mean-field messages of all agents of all networks (`act`), and returns the demands (B, N) in RBs.
The topology-aware ones (`ratio`, `carried`, `backpressure`, `behaviour`) read the scenario's
rate classes and routes at reset; the others use the observations only. Definitions: spec
section 3 ("Non-learning allocators") and section 4 (behaviour policy); `docs/simulator.md`.
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


def backlog(obs: np.ndarray) -> np.ndarray:
    """Packets waiting at each node: generation plus transmission queue."""
    return obs[..., 0].astype(np.float64) + obs[..., 2]


def _split(weights: np.ndarray, rbs: int) -> np.ndarray:
    """Weights scaled to sum to the frame's RBs (equal split if all weights are zero)."""
    total = weights.sum(axis=-1, keepdims=True)
    n = weights.shape[-1]
    return np.where(total > 0, weights * rbs / np.where(total > 0, total, 1.0), rbs / n)


class Equal(Policy):
    name = "equal"

    def act(self, obs, mean_field):
        return np.full(obs.shape[:2], self.rbs / self.n_nodes)


class Ratio(Policy):
    """Proportional to the node's own rate class only: blind to relaying."""

    name = "ratio"

    def reset(self, sim):
        super().reset(sim)
        weights = np.where(sim.is_high, sim.cfg.rate_ratio, 1.0)
        self._demand = _split(weights, self.rbs)

    def act(self, obs, mean_field):
        return self._demand.copy()


class Carried(Policy):
    """Proportional to the traffic the node carries (own + relayed), summing to M x L."""

    name = "carried"

    def reset(self, sim):
        super().reset(sim)
        self._demand = _split(sim.carried_ppf, self.rbs)

    def act(self, obs, mean_field):
        return self._demand.copy()


class Behaviour(Carried):
    """`carried` times mean-one log-normal noise, drawn per node per frame (spec section 4).

    demand_i = carried_i * exp(sigma z - sigma^2 / 2), z ~ N(0, 1): the expected demand is the
    noiseless one and the spread grows with sigma. The MAC scales the sum down to M x L when
    the noise pushes it over.
    """

    name = "behaviour"

    def __init__(self, noise: float = 0.5, seed: int = 0):
        if not np.isfinite(noise) or noise < 0:
            raise PolicyError(f"behaviour noise: must be a finite sigma >= 0, got {noise!r}")
        self.noise = float(noise)
        self.seed = int(seed)

    def reset(self, sim):
        super().reset(sim)
        # one stream per batch, derived from the policy seed and the networks' seeds
        self._rng = np.random.default_rng([self.seed, *sim.seeds])

    def act(self, obs, mean_field):
        z = self._rng.standard_normal(self._demand.shape)
        return self._demand * np.exp(self.noise * z - 0.5 * self.noise**2)

    def describe(self):
        return {
            "name": self.name,
            "base": "carried",
            "noise": "lognormal-mean-one",
            "sigma": self.noise,
            "seed": self.seed,
        }


class Proportional(Policy):
    """Demand = current backlog (both queues)."""

    name = "proportional"

    def act(self, obs, mean_field):
        return backlog(obs)


class MaxWeight(Policy):
    """RBs handed out one at a time to the node with the longest remaining backlog."""

    name = "maxweight"

    def act(self, obs, mean_field):
        remaining = backlog(obs)
        demand = np.zeros_like(remaining)
        rows = np.arange(remaining.shape[0])
        for _ in range(self.rbs):
            i = np.argmax(remaining, axis=1)
            take = remaining[rows, i] > 0
            demand[rows[take], i[take]] += 1
            remaining[rows[take], i[take]] -= 1
        return demand


class Backpressure(Policy):
    """Backlog minus the backlog waiting downstream, floored at zero.

    The observation does not split a queue by destination, so the downstream backlog is the
    next hops' backlogs weighted by the share of the node's traffic that each will relay
    (packets whose next hop is their destination leave the network and face no queue).
    """

    name = "backpressure"

    def reset(self, sim):
        super().reset(sim)
        b, n = sim.batch_size, sim.n_nodes
        relay = np.zeros((b, n, n))
        for k, net in enumerate(sim.networks):
            for i in range(n):
                for d in range(n):
                    j = net.next_hop[i, d]
                    if d != i and j != d:
                        relay[k, i, j] += net.transit_ppf[i, d]
        carried = sim.carried_ppf[..., None]
        self._share = np.where(carried > 0, relay / np.where(carried > 0, carried, 1.0), 0.0)

    def act(self, obs, mean_field):
        q = backlog(obs)
        downstream = np.einsum("bij,bj->bi", self._share, q)
        return np.maximum(q - downstream, 0.0)


class Random(Policy):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def reset(self, sim):
        super().reset(sim)
        self._rng = np.random.default_rng([self.seed, *sim.seeds])

    def act(self, obs, mean_field):
        return self._rng.uniform(0.0, self.rbs, size=obs.shape[:2])


class Static(Policy):
    """User-given demands: one value for every node, or one per node."""

    name = "static"

    def __init__(self, demands: list[float]):
        d = np.asarray(demands, dtype=np.float64)
        if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)) or np.any(d < 0):
            raise PolicyError(
                "static: give finite demands >= 0, one value or one per node, e.g. static:4 "
                "or static:2,8,4"
            )
        self.demands = d

    def reset(self, sim):
        super().reset(sim)
        if self.demands.size not in (1, self.n_nodes):
            raise PolicyError(
                f"static: {self.demands.size} demands given but the scenario has "
                f"{self.n_nodes} nodes; give 1 or {self.n_nodes}"
            )

    def act(self, obs, mean_field):
        return np.broadcast_to(self.demands, obs.shape[:2]).copy()

    def describe(self):
        return {"name": self.name, "demands": self.demands.tolist()}


ALLOCATORS = {
    cls.name: cls
    for cls in (Equal, Ratio, Carried, Proportional, MaxWeight, Backpressure, Random, Static)
}
POLICY_NAMES = (*ALLOCATORS, "behaviour", "macdmp:RUN_DIR")


def make_policy(spec: str | Policy, seed: int = 0) -> Policy:
    """A policy from its name: an allocator, `behaviour[:SIGMA]`, `static:D[,D...]`,
    or `macdmp:RUN_DIR` (a trained MA-CDMP run)."""
    if isinstance(spec, Policy):
        return spec
    name, _, arg = str(spec).partition(":")
    if name == "static":
        try:
            values = [float(v) for v in arg.split(",")] if arg else []
        except ValueError:
            raise PolicyError(f"static: could not read demands from {arg!r}") from None
        return Static(values)
    if name == "behaviour":
        try:
            sigma = float(arg) if arg else 0.5
        except ValueError:
            raise PolicyError(f"behaviour: noise sigma must be a number, got {arg!r}") from None
        return Behaviour(noise=sigma, seed=seed)
    if name == "random":
        return Random(seed=seed)
    if name == "macdmp":
        from macdmp.planner.policy import PlannerPolicy

        if not arg:
            raise PolicyError("macdmp: give the run folder, e.g. --policy macdmp:runs/demo")
        return PlannerPolicy.from_spec(arg, seed=seed)
    if name in ALLOCATORS and not arg:
        return ALLOCATORS[name]()
    raise PolicyError(f"policy: unknown policy {spec!r}; allowed: {', '.join(POLICY_NAMES)}")
