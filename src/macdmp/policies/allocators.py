"""Non-learning RB allocators and the behaviour policy, on the policy interface of `base.py`.

The topology-aware ones (`ratio`, `carried`, `backpressure`, `behaviour`) read the scenario's
rate classes and routes at reset; the others use the observations only. Definitions: spec
section 3 ("Non-learning allocators") and section 4 (behaviour policy); `docs/guide/simulator.md`.
"""

from __future__ import annotations

import numpy as np

from macdmp.policies.base import Policy, PolicyError


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
    """Proportional to the traffic the node carries (own + relayed), summing to M x L.

    A reference, not a deployable rule: the static split from every node's long-run mean rate
    and the routes at the start of the episode, network-wide knowledge that no node has.
    """

    name = "carried"
    reference = True

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


class CarriedNow(Policy):
    """A genie: `carried` recomputed every frame from the current rates and current routes.

    Reads the rate each node offers this frame (its active services, its burst state, the load
    profile) and the routes of now (mobility): knowledge no node has.
    """

    name = "carried-now"
    reference = True

    def reset(self, sim):
        super().reset(sim)
        self._sim = sim

    def act(self, obs, mean_field):
        return _split(self._sim.carried_now_ppf(), self.rbs)


class Centralized(Policy):
    """The centralized reference: a network-wide max-weight schedule over the packets queued now.

    Each frame it reads every queue by destination, the current routes and the current rates.
    It hands the RBs out one at a time to the node whose queued packets weigh most, each
    packet weighing 1 / (hops it still has to go): shortest remaining route first, which is
    what lowers the mean delay when the frame cannot serve everyone, and no node gets more
    RBs than it has packets. The RBs left over go to the packets that will arrive within the
    frame, split as `carried-now` splits the frame. A reference that reads state no node has,
    not a rule a node can run; docs/guide/families.md says where it is the best policy measured
    and where it is not.
    """

    name = "centralized"
    reference = True

    def reset(self, sim):
        super().reset(sim)
        self._sim = sim

    def act(self, obs, mean_field):
        sim = self._sim
        queued = backlog(obs)
        weight = (sim.queued_by_destination() / np.maximum(sim.hops, 1)).sum(axis=2)
        per_packet = np.where(queued > 0, weight / np.maximum(queued, 1), 0.0)
        left, demand = queued.copy(), np.zeros_like(queued)
        rows = np.arange(len(queued))
        for _ in range(int(self.rbs)):
            i = np.argmax(np.where(left > 0, weight, -1.0), axis=1)
            take = left[rows, i] > 0
            if not take.any():
                break
            r, c = rows[take], i[take]
            demand[r, c] += 1
            left[r, c] -= 1
            weight[r, c] -= per_packet[r, c]
        spare = self.rbs - demand.sum(axis=1, keepdims=True)
        return demand + spare * _split(sim.carried_now_ppf(), 1)


class Noisy(Policy):
    """Any allocator times mean-one log-normal noise per node per frame: ``NAME:SIGMA``.

    demand_i = base_i * exp(sigma z - sigma^2 / 2), z ~ N(0, 1), as the behaviour policy
    perturbs `carried`; used to record datasets whose actions vary around adaptive rules.
    """

    def __init__(self, base: Policy, noise: float, seed: int = 0):
        if not np.isfinite(noise) or noise < 0:
            raise PolicyError(f"{base.name} noise: must be a finite sigma >= 0, got {noise!r}")
        self.base = base
        self.noise = float(noise)
        self.seed = int(seed)
        self.name = f"{base.name}:{noise:g}"
        self.reference = getattr(base, "reference", False)

    def reset(self, sim):
        super().reset(sim)
        self.base.reset(sim)
        self._rng = np.random.default_rng([self.seed, *sim.seeds])

    def act(self, obs, mean_field):
        demand = self.base.act(obs, mean_field)
        z = self._rng.standard_normal(demand.shape)
        return demand * np.exp(self.noise * z - 0.5 * self.noise**2)

    def describe(self):
        return {
            "name": self.name,
            "base": self.base.name,
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
        q = backlog(obs)
        if np.all(q == np.round(q)):  # queue lengths: the same result at once
            return _water_fill(q, int(self.rbs))
        return _one_at_a_time(q, self.rbs)


def _water_fill(q: np.ndarray, rbs: int) -> np.ndarray:
    """MaxWeight's allocation for integer backlogs without handing out RBs one by one.

    Node i's RBs are units worth q_i, q_i - 1, ..., 1; one at a time, the longest remaining
    backlog (first node on ties) takes the next, so the RBs go to the rbs units of largest
    value, ties by node index. With v the value of the last unit given, every node gets its
    units above v, and the nodes with q_i >= v share the rest in index order.
    """
    q = q.astype(np.int64)
    top = int(q.max(initial=0))
    if top == 0:
        return np.zeros(q.shape)
    levels = np.arange(1, top + 2)  # c[:, v-1] = units worth >= v
    c = np.maximum(q[:, :, None] - levels + 1, 0).sum(axis=1)
    full = c[:, 0] <= rbs  # every unit given: the demand is the backlog
    v = np.maximum((c >= rbs).sum(axis=1), 1)  # value of the rbs-th unit (where not full)
    above = np.maximum(q - v[:, None], 0)
    rest = rbs - above.sum(axis=1)
    at_v = q >= v[:, None]
    extra = at_v & (np.cumsum(at_v, axis=1) <= rest[:, None])
    demand = above + extra
    return np.where(full[:, None], q, demand).astype(np.float64)


def _one_at_a_time(remaining: np.ndarray, rbs: float) -> np.ndarray:
    """MaxWeight by its definition: RBs handed out one at a time (any backlogs)."""
    remaining = remaining.copy()
    demand = np.zeros_like(remaining)
    rows = np.arange(remaining.shape[0])
    for _ in range(int(rbs)):
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
    for cls in (
        Equal,
        Ratio,
        Carried,
        CarriedNow,
        Centralized,
        Proportional,
        MaxWeight,
        Backpressure,
        Random,
        Static,
    )
}
# References: they read network-wide state no node has; every table labels them as such.
REFERENCES = tuple(name for name, cls in ALLOCATORS.items() if getattr(cls, "reference", False))
# Rules a node could run from what it sees (its queues, its neighbours' mean, fixed settings).
DEPLOYABLE = ("equal", "ratio", "proportional", "maxweight", "backpressure")
