"""One network instance: topology, radio link quality, routes and traffic rates.

Built once per episode from a scenario and a seed; the batched core (`core.py`) then steps it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numba as nb
import numpy as np

from .config import ConfigError, RFConfig, ScenarioConfig

SPEED_OF_LIGHT_M_S = 299_792_458.0
BOLTZMANN_DBM_HZ = -174.0  # kT at 290 K, in dBm/Hz


class TopologyError(RuntimeError):
    """No connected placement was found within the allowed number of tries."""


def received_power_dbm(distance_m: np.ndarray, rf: RFConfig) -> np.ndarray:
    """Free-space received power, paper Eq. 9-10."""
    lam = SPEED_OF_LIGHT_M_S / rf.carrier_hz
    d = np.maximum(np.asarray(distance_m, dtype=np.float64), 1e-3)
    fspl_db = 20.0 * np.log10(4.0 * math.pi * d / lam)
    return rf.tx_power_dbm + rf.gain_tx_dbi + rf.gain_rx_dbi - fspl_db


def noise_floor_dbm(rf: RFConfig) -> float:
    return BOLTZMANN_DBM_HZ + 10.0 * math.log10(rf.bandwidth_hz) + rf.noise_figure_db


def packet_error_rate(distance_m: np.ndarray, rf: RFConfig, packet_bits: int) -> np.ndarray:
    """PER = 1 - (1 - BER)^bits with BPSK BER = Q(sqrt(2 SNR))."""
    snr = 10.0 ** ((received_power_dbm(distance_m, rf) - noise_floor_dbm(rf)) / 10.0)
    # Q(x) = erfc(x / sqrt 2) / 2, so BER = erfc(sqrt(SNR)) / 2
    ber = 0.5 * _erfc(np.sqrt(snr))
    # log1p keeps precision when BER is ~1e-15 (ideal RF)
    return -np.expm1(packet_bits * np.log1p(-np.minimum(ber, 0.5)))


def _erfc(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erfc, otypes=[np.float64])(x)


@dataclass(frozen=True)
class Network:
    """Static description of one network: all arrays indexed by node."""

    positions_m: np.ndarray  # (N, 2)
    adjacency: np.ndarray  # (N, N) bool, 1-hop graph, no self loops
    next_hop: np.ndarray  # (N, N) int, next_hop[i, d]; -1 on the diagonal
    hops: np.ndarray  # (N, N) int, shortest path length in hops
    per: np.ndarray  # (N, N) packet error rate of each link under the scenario's RF
    rates_ppf: np.ndarray  # (N,) packets generated per frame
    is_high: np.ndarray  # (N,) bool
    dest: np.ndarray  # (N,) fixed destination per node, or -1 for uniform
    transit_ppf: np.ndarray  # (N, N) packets per frame node i transmits toward destination d
    carried_ppf: np.ndarray  # (N,) packets per frame each node transmits (own + relayed)
    link_ppf: np.ndarray  # (N, N) packets per frame sent over each link (routes' load)

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency.shape[0])


def build_network(cfg: ScenarioConfig, rng: np.random.Generator) -> Network:
    """Place nodes (or take the given positions), route, and calibrate rates to the load."""
    n = cfg.n_nodes
    if cfg.positions_m is not None:
        pos = np.asarray(cfg.positions_m, dtype=np.float64)
        adj = _adjacency(pos, cfg.range_m)
        if not _connected(adj):
            raise ConfigError(
                f"positions_m: the 1-hop graph (range_m = {cfg.range_m:g} m) is not connected"
            )
    else:
        for _ in range(cfg.max_topology_tries):
            pos = rng.uniform(0.0, cfg.area_m, size=(n, 2))
            adj = _adjacency(pos, cfg.range_m)
            if _connected(adj):
                break
        else:
            raise TopologyError(
                f"no connected placement of {n} nodes in {cfg.area_m:g} m x {cfg.area_m:g} m with "
                f"range_m = {cfg.range_m:g} after max_topology_tries = {cfg.max_topology_tries}; "
                "raise range_m or max_topology_tries, lower area_m, or give positions_m"
            )
    hops, next_hop = _routes(adj)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    per = np.where(adj, packet_error_rate(dist, cfg.rf, cfg.packet_bits), 1.0)

    if cfg.high_nodes is not None:
        is_high = np.zeros(n, dtype=bool)
        is_high[list(cfg.high_nodes)] = True
    else:
        is_high = np.zeros(n, dtype=bool)
        is_high[rng.permutation(n)[: cfg.n_high]] = True

    dest = np.full(n, -1, dtype=np.int64)
    if cfg.destinations == "fixed":
        dest[:] = cfg.dest
    mean_hops = _mean_hops(hops, dest)
    if cfg.rates_ppf is not None:
        rates = np.asarray(cfg.rates_ppf, dtype=np.float64)
    else:
        weight = np.where(is_high, cfg.rate_ratio, 1.0)
        # sum_i rate_i * mean_hops_i = load * M * L  (spec section 1, "load")
        rates = weight * (cfg.load * cfg.rbs / float(np.sum(weight * mean_hops)))
    transit = transit_matrix(rates, next_hop, hops, dest)
    return Network(
        positions_m=pos,
        adjacency=adj,
        next_hop=next_hop,
        hops=hops,
        per=per,
        rates_ppf=rates,
        is_high=is_high,
        dest=dest,
        transit_ppf=transit,
        carried_ppf=transit.sum(axis=1),
        link_ppf=link_traffic(transit, next_hop),
    )


def transit_matrix(
    rates_ppf: np.ndarray, next_hop: np.ndarray, hops: np.ndarray, dest: np.ndarray
) -> np.ndarray:
    """T[i, d]: packets per frame that node i transmits toward destination d (own + relayed)."""
    n = len(rates_ppf)
    own = np.zeros((n, n))
    for s in range(n):
        if dest[s] >= 0:
            own[s, dest[s]] = rates_ppf[s]
        else:
            own[s] = rates_ppf[s] / (n - 1)
            own[s, s] = 0.0
    return push_along_routes(own[None], next_hop[None], hops[None])[0]


@nb.njit(cache=True)
def push_along_routes(own, next_hop, hops):
    """T[b, i, d]: packets that node i sends toward d when every node s offers own[b, s, d].

    For any per-destination amounts: the long-run rates (`transit_matrix`), the rates of now
    or the packets queued now (`BatchedNetworks`); sources without a route to d contribute
    nothing. Each destination's amounts are pushed from the farthest nodes inward (a next hop
    is one hop closer).
    """
    n_env, n = own.shape[0], own.shape[1]
    out = np.zeros_like(own)
    order = np.empty(n, dtype=np.int64)
    for b in range(n_env):
        for d in range(n):
            for s in range(n):
                if s != d and hops[b, s, d] > 0:
                    out[b, s, d] = own[b, s, d]
            order[:] = np.argsort(-hops[b, :, d], kind="mergesort")
            for k in order:
                if k != d and hops[b, k, d] > 0:
                    nh = next_hop[b, k, d]
                    if nh != d:
                        out[b, nh, d] += out[b, k, d]
    return out


def link_traffic(transit: np.ndarray, next_hop: np.ndarray) -> np.ndarray:
    """F[i, j]: packets per frame node i sends over the link to neighbour j."""
    n = len(transit)
    flow = np.zeros((n, n))
    for i in range(n):
        for d in range(n):
            if d != i:
                flow[i, next_hop[i, d]] += transit[i, d]
    return flow


def _adjacency(pos: np.ndarray, range_m: float) -> np.ndarray:
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    adj = d <= range_m
    np.fill_diagonal(adj, False)
    return adj


def _connected(adj: np.ndarray) -> bool:
    seen = np.zeros(len(adj), dtype=bool)
    seen[0] = True
    frontier = [0]
    while frontier:
        nxt = np.flatnonzero(adj[frontier].any(axis=0) & ~seen)
        seen[nxt] = True
        frontier = list(nxt)
    return bool(seen.all())


def _routes(adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BFS from each destination; next hop = the lowest-indexed neighbour on a shortest path."""
    n = len(adj)
    hops = np.full((n, n), -1, dtype=np.int64)
    next_hop = np.full((n, n), -1, dtype=np.int64)
    neighbours = [np.flatnonzero(adj[i]) for i in range(n)]
    for d in range(n):
        hops[d, d] = 0
        queue = deque([d])
        while queue:
            u = queue.popleft()
            for v in neighbours[u]:
                if hops[v, d] < 0:
                    hops[v, d] = hops[u, d] + 1
                    queue.append(v)
        for i in range(n):
            if i != d:
                cand = [v for v in neighbours[i] if hops[v, d] == hops[i, d] - 1]
                next_hop[i, d] = min(cand)
    return hops, next_hop


def _mean_hops(hops: np.ndarray, dest: np.ndarray) -> np.ndarray:
    n = len(hops)
    out = np.empty(n)
    for i in range(n):
        out[i] = hops[i, dest[i]] if dest[i] >= 0 else hops[i][np.arange(n) != i].mean()
    return out
