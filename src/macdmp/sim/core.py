"""The batched MF-TDMA core: B independent networks of N nodes, stepped one frame at a time.

Each network has its own topology, traffic and random stream (xoshiro256** seeded from its own
seed), so network b evolves bit for bit the same whether it runs alone or in a batch of 1024.
The frame loop is compiled with Numba: it is a packet-level loop over slots and RBs with ring
buffer queues, which NumPy cannot vectorise without materialising every packet
(`benchmarks/sim_throughput.py` measures it; `docs/guide/simulator.md` has the numbers).

One frame (spec section 2):
  1. management: demands -> clip to [0, ML] -> scale down to sum <= ML -> systematic rounding
     to integer grants -> random placement of the granted RBs on the (slot, channel) grid;
  2. transmission, slot by slot: each held RB sends the queued packet with the earliest
     generation time; successes move to the next hop (received packets can be forwarded
     from the next slot on), failures stay at the sender for retransmission (dropped after
     `max_retries` retries); then the slot's Poisson arrivals join the generation queues.
     In a mobile scenario a packet whose next hop has left range goes to a neighbour in range
     that is closer to its destination, or is dropped (`dropped_route`) when none is;
  3. dynamic scenarios only (`dynamics.py`): the nodes move and, on schedule, the links and
     routes are recomputed; the traffic process advances to the next frame's rates.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass

import numba as nb
import numpy as np

from . import dynamics as dyn
from .config import ScenarioConfig
from .network import Network, build_network, push_along_routes
from .rng import exp_ms as _exp_ms
from .rng import splitmix64_states as _splitmix64_states
from .rng import uniform as _uniform

# Columns of the per-frame statistics array returned by `step`.
STAT_FIELDS = (
    "generated",
    "delivered",
    "dropped_buffer",
    "dropped_retry",
    "delay_sum_ms",
    "transmissions",
    "dropped_route",
)
GEN, DELIV, DROP_BUF, DROP_RETRY, DELAY_SUM, TX, DROP_ROUTE = range(len(STAT_FIELDS))
DROP_COLUMNS = (DROP_BUF, DROP_RETRY, DROP_ROUTE)  # every reason a packet is dropped
N_STATS = len(STAT_FIELDS)

_SCHED = {"earliest": 0, "transit_first": 1, "own_first": 2}


class ActionError(ValueError):
    """Demands that the MAC cannot take (wrong shape, negative or not finite)."""


# --------------------------------------------------------------------------------------
# The frame kernel
# --------------------------------------------------------------------------------------
def _step_frame(
    demands,  # (B, N) float64, already checked finite and >= 0
    slots,
    channels,
    cap,
    max_retries,
    sched_mode,
    frame_ms,
    next_hop,  # (B, N, N)
    per,  # (B, N, N)
    rate_per_ms,  # (B, N)
    dest,  # (B, N) fixed destination, -1 uniform, dyn.DEST_BY_SERVICE drawn from dest_w
    dest_w,  # (B, N, N) each node's rate toward each destination (sessions)
    pos,  # (B, N, 2) positions now (mobile scenarios)
    range2,  # 1-hop range squared, m^2
    mobile,  # check every hop against the current positions
    link_tx,  # in/out (B, N, N) transmissions over each link since reset
    hops,  # (B, N, N) route lengths of the last recomputation (mobile re-routing)
    rerouted,  # in/out (B,) packets sent around a next hop that had left range
    q_time,  # (B, N, 2, Q) generation time, ms from episode start
    q_dst,  # (B, N, 2, Q)
    q_retry,  # (B, N, 2, Q)
    q_head,  # (B, N, 2)
    q_len,  # (B, N, 2)
    next_arr,  # (B, N) time of the next arrival, ms
    rng,  # (B, 4) uint64
    frame,  # (B,)
    last_delay,  # (B, N)
    obs,  # out (B, N, 4) float32
    reward,  # out (B, N)
    grants,  # out (B, N) int64
    stats,  # out (B, N_STATS)
    node_deliv,  # scratch/out (B, N) packets delivered to each node this frame
    node_drop,  # out (B, N) packets dropped at each node this frame (buffer or retry limit)
    min_delay,  # out (B,) smallest delay delivered this frame (inf if none)
    cells,  # scratch (B, ML)
    owner,  # scratch (B, ML)
    pend_node,  # scratch (B, L)
    pend_time,
    pend_dst,
    pend_retry,
):
    n_env, n = demands.shape
    ml = slots * channels
    slot_ms = frame_ms / slots
    for b in nb.prange(n_env):
        for k in range(N_STATS):
            stats[b, k] = 0.0
        min_delay[b] = np.inf
        # ---- stage 1: management ---------------------------------------------------
        total = 0.0
        for i in range(n):
            a = min(demands[b, i], float(ml))
            total += a
        scale = float(ml) / total if total > ml else 1.0
        u = _uniform(rng, b)
        csum = 0.0
        prev_k = 0
        for i in range(n):
            csum += min(demands[b, i], float(ml)) * scale
            k = int(np.ceil(min(csum, float(ml)) - u))
            if k > ml:
                k = ml
            if k < prev_k:
                k = prev_k
            grants[b, i] = k - prev_k
            prev_k = k
        for c in range(ml):
            cells[b, c] = c
            owner[b, c] = -1
        for c in range(ml - 1, 0, -1):  # Fisher-Yates
            j = int(_uniform(rng, b) * (c + 1))
            tmp = cells[b, c]
            cells[b, c] = cells[b, j]
            cells[b, j] = tmp
        p = 0
        for i in range(n):
            for _ in range(grants[b, i]):
                owner[b, cells[b, p]] = i
                p += 1
        # ---- stage 2: transmission -------------------------------------------------
        t0 = frame[b] * frame_ms
        for i in range(n):
            node_deliv[b, i] = 0.0
            node_drop[b, i] = 0.0
            obs[b, i, 1] = 0.0
            obs[b, i, 3] = 0.0
        dsum_node = reward[b]  # reuse the output row as the per-node delay accumulator
        for i in range(n):
            dsum_node[i] = 0.0
        for s in range(slots):
            slot_end = t0 + (s + 1) * slot_ms
            npend = 0
            for ch in range(channels):
                i = owner[b, s * channels + ch]
                if i < 0:
                    continue
                lg = q_len[b, i, 0]
                lt = q_len[b, i, 1]
                if lg == 0 and lt == 0:
                    continue
                if lg == 0:
                    q = 1
                elif lt == 0:
                    q = 0
                elif sched_mode == 0:
                    q = (
                        1
                        if q_time[b, i, 1, q_head[b, i, 1]] < q_time[b, i, 0, q_head[b, i, 0]]
                        else 0
                    )
                elif sched_mode == 1:
                    q = 1
                else:
                    q = 0
                h = q_head[b, i, q]
                t_gen = q_time[b, i, q, h]
                dst = q_dst[b, i, q, h]
                retry = q_retry[b, i, q, h]
                q_head[b, i, q] = (h + 1) % cap
                q_len[b, i, q] -= 1
                nh = next_hop[b, i, dst]
                if mobile and nh >= 0:  # routes are recomputed every route_every frames
                    dx = pos[b, i, 0] - pos[b, nh, 0]
                    dy = pos[b, i, 1] - pos[b, nh, 1]
                    if dx * dx + dy * dy > range2:  # the next hop has left range: re-route
                        nh = -1  # to the lowest-indexed neighbour in range that is closer
                        for v in range(n):
                            if v != i and 0 <= hops[b, v, dst] < hops[b, i, dst]:
                                dx = pos[b, i, 0] - pos[b, v, 0]
                                dy = pos[b, i, 1] - pos[b, v, 1]
                                if dx * dx + dy * dy <= range2:
                                    nh = v
                                    rerouted[b] += 1
                                    break
                if nh < 0:  # no route (a partition), or no neighbour in range leads on
                    stats[b, DROP_ROUTE] += 1.0
                    node_drop[b, i] += 1.0
                    continue
                stats[b, TX] += 1.0
                link_tx[b, i, nh] += 1
                if _uniform(rng, b) >= per[b, i, nh]:
                    if nh == dst:
                        delay = slot_end - t_gen
                        if delay < min_delay[b]:
                            min_delay[b] = delay
                        stats[b, DELIV] += 1.0
                        stats[b, DELAY_SUM] += delay
                        node_deliv[b, nh] += 1.0
                        dsum_node[nh] += delay
                    else:
                        pend_node[b, npend] = nh
                        pend_time[b, npend] = t_gen
                        pend_dst[b, npend] = dst
                        pend_retry[b, npend] = 0
                        npend += 1
                elif retry >= max_retries:
                    stats[b, DROP_RETRY] += 1.0
                    node_drop[b, i] += 1.0
                else:
                    pend_node[b, npend] = i
                    pend_time[b, npend] = t_gen
                    pend_dst[b, npend] = dst
                    pend_retry[b, npend] = retry + 1
                    npend += 1
            # received and failed packets join transmission queues at the end of the slot
            for k in range(npend):
                j = pend_node[b, k]
                if q_len[b, j, 1] >= cap:
                    stats[b, DROP_BUF] += 1.0
                    node_drop[b, j] += 1.0
                    continue
                idx = (q_head[b, j, 1] + q_len[b, j, 1]) % cap
                q_time[b, j, 1, idx] = pend_time[b, k]
                q_dst[b, j, 1, idx] = pend_dst[b, k]
                q_retry[b, j, 1, idx] = pend_retry[b, k]
                q_len[b, j, 1] += 1
            for i in range(n):
                if q_len[b, i, 0] > obs[b, i, 1]:
                    obs[b, i, 1] = q_len[b, i, 0]
                if q_len[b, i, 1] > obs[b, i, 3]:
                    obs[b, i, 3] = q_len[b, i, 1]
            # Poisson arrivals during this slot; sendable from the next slot on
            for i in range(n):
                while next_arr[b, i] < slot_end:
                    stats[b, GEN] += 1.0
                    t_gen = next_arr[b, i]
                    next_arr[b, i] = t_gen + _exp_ms(rng, b, rate_per_ms[b, i])
                    if dest[b, i] >= 0:
                        dst = dest[b, i]
                    elif dest[b, i] == -1:
                        dst = int(_uniform(rng, b) * (n - 1))
                        if dst >= i:
                            dst += 1
                    else:  # the destination of a service, drawn in proportion to its rate
                        total_w = 0.0
                        for d in range(n):
                            total_w += dest_w[b, i, d]
                        u_w = _uniform(rng, b) * total_w
                        dst = -1
                        for d in range(n):
                            if dest_w[b, i, d] > 0.0:
                                dst = d
                                u_w -= dest_w[b, i, d]
                                if u_w < 0.0:
                                    break
                    if q_len[b, i, 0] >= cap:
                        stats[b, DROP_BUF] += 1.0
                        node_drop[b, i] += 1.0
                        continue
                    idx = (q_head[b, i, 0] + q_len[b, i, 0]) % cap
                    q_time[b, i, 0, idx] = t_gen
                    q_dst[b, i, 0, idx] = dst
                    q_retry[b, i, 0, idx] = 0
                    q_len[b, i, 0] += 1
                if q_len[b, i, 0] > obs[b, i, 1]:
                    obs[b, i, 1] = q_len[b, i, 0]
        # ---- observations and reward ----------------------------------------------
        for i in range(n):
            obs[b, i, 0] = q_len[b, i, 0]
            obs[b, i, 2] = q_len[b, i, 1]
            if node_deliv[b, i] > 0:
                last_delay[b, i] = dsum_node[i] / node_deliv[b, i]
            reward[b, i] = -last_delay[b, i]
        frame[b] += 1


# Two compilations of the same frame: the parallel one spreads networks over Numba's threads
# and pays a barrier every frame, which only large batches repay (and which slows down badly
# when another process competes for the cores); small batches run the serial one.
def _named(fn, name: str):
    """A copy of fn under another name, so that Numba caches each compilation separately."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name)
    copy.__qualname__ = name
    return copy


_step_parallel = nb.njit(cache=True, parallel=True)(_named(_step_frame, "_step_parallel"))
_step_serial = nb.njit(cache=True)(_named(_step_frame, "_step_serial"))
PARALLEL_MIN_BATCH = 64


@nb.njit(cache=True)
def _reset_arrivals(rng, rate_per_ms, next_arr):
    n_env, n = rate_per_ms.shape
    for b in range(n_env):
        for i in range(n):
            next_arr[b, i] = _exp_ms(rng, b, rate_per_ms[b, i])


# --------------------------------------------------------------------------------------
# The Python-facing batch
# --------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    """What one frame returns for every network and node."""

    obs: np.ndarray  # (B, N, 4) float32: gen, gen_max, tran, tran_max
    reward: np.ndarray  # (B, N) float64: -delay of packets delivered to the node (ms)
    grants: np.ndarray  # (B, N) int64: RBs granted this frame
    stats: np.ndarray  # (B, N_STATS) float64: see STAT_FIELDS
    delivered_to: np.ndarray  # (B, N) packets delivered to each node this frame
    dropped_at: np.ndarray  # (B, N) packets dropped at each node this frame
    min_delay_ms: np.ndarray  # (B,) smallest end-to-end delay delivered this frame (inf if none)


class BatchedNetworks:
    """B independent networks of one scenario, each with its own seed."""

    def __init__(self, cfg: ScenarioConfig, seeds: Sequence[int]):
        if len(seeds) < 1:
            raise ValueError("seeds: give at least one seed (one per network)")
        self.cfg = cfg
        self.reset(seeds)

    # ---- set-up ----------------------------------------------------------------------
    def reset(self, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Rebuild every network from its seed and empty the queues; returns observations."""
        if seeds is not None:
            self.seeds = [_check_seed(s) for s in seeds]
        cfg = self.cfg
        b, n, q = len(self.seeds), cfg.n_nodes, cfg.queue_capacity
        self.networks: list[Network] = []
        rng_states = np.empty((b, 4), dtype=np.uint64)
        dyn_states = np.empty((b, 4), dtype=np.uint64)
        for k, seed in enumerate(self.seeds):
            # spawn(3)'s first two children are spawn(2)'s: static scenarios keep their bits
            topo_seq, traffic_seq, dyn_seq = np.random.SeedSequence(seed).spawn(3)
            self.networks.append(build_network(cfg, np.random.default_rng(topo_seq)))
            rng_states[k] = _splitmix64_states(int(traffic_seq.generate_state(1, np.uint64)[0]))
            dyn_states[k] = _splitmix64_states(int(dyn_seq.generate_state(1, np.uint64)[0]))
        self.rng = rng_states
        self.dyn_rng = dyn_states
        nets = self.networks
        # adjacency, next_hop, hops, per and positions_m are those of now: a mobile scenario
        # updates them in place (the networks keep the episode's start)
        self.adjacency = np.stack([net.adjacency for net in nets])
        self.next_hop = np.stack([net.next_hop for net in nets])
        self.hops = np.stack([net.hops for net in nets])
        self.per = np.stack([net.per for net in nets])
        self.positions_m = np.stack([net.positions_m for net in nets])
        self.rates_ppf = np.stack([net.rates_ppf for net in nets])
        self.dest = np.stack([net.dest for net in nets])
        self.carried_ppf = np.stack([net.carried_ppf for net in nets])
        self.is_high = np.stack([net.is_high for net in nets])
        self.degree = self.adjacency.sum(axis=2)
        self._rate_per_ms = self.rates_ppf / cfg.frame_ms
        self.q_time = np.zeros((b, n, 2, q))
        self.q_dst = np.zeros((b, n, 2, q), dtype=np.int32)
        self.q_retry = np.zeros((b, n, 2, q), dtype=np.int8)
        self.q_head = np.zeros((b, n, 2), dtype=np.int64)
        self.q_len = np.zeros((b, n, 2), dtype=np.int64)
        self.next_arr = np.zeros((b, n))
        self.frame = np.zeros(b, dtype=np.int64)
        self._dest_kernel = self.dest
        self._dest_w = np.zeros((1, 1, 1))
        self.refused_services = np.zeros(b, dtype=np.int64)
        if cfg.traffic == "poisson" and cfg.load_profile is None:
            _reset_arrivals(self.rng, self._rate_per_ms, self.next_arr)
        else:
            self._reset_traffic()
        self.last_delay = np.zeros((b, n))
        ml, ch = cfg.rbs, cfg.channels
        self._cells = np.zeros((b, ml), dtype=np.int64)
        self._owner = np.zeros((b, ml), dtype=np.int64)
        self._pend = (
            np.zeros((b, ch), dtype=np.int64),
            np.zeros((b, ch)),
            np.zeros((b, ch), dtype=np.int64),
            np.zeros((b, ch), dtype=np.int64),
        )
        self.obs = np.zeros((b, n, 4), dtype=np.float32)
        self.totals = np.zeros((b, N_STATS))
        self.link_tx = np.zeros((b, n, n), dtype=np.int64)  # transmissions per link
        self.rerouted = np.zeros(b, dtype=np.int64)  # packets sent around a broken link
        if cfg.mobile:
            self._waypoints = np.empty((b, n, 2))
            dyn.draw_waypoints(self._waypoints, cfg.area_m, self.dyn_rng)
        return self.obs.copy()

    def _reset_traffic(self) -> None:
        """The stationary start of the traffic process, then the rates of frame 0."""
        cfg = self.cfg
        b, n = self.batch_size, cfg.n_nodes
        self._base_rate = self._rate_per_ms.copy()  # long-run mean, packets per ms
        self._rate_per_ms = np.full((b, n), -1.0)  # every node draws its first arrival
        slots = (b, n, cfg.session_max) if cfg.traffic == "sessions" else (b, n, 1)
        self._sessions = (
            np.zeros(slots),  # rate of each service slot, packets per ms (0: free)
            np.zeros(slots, dtype=np.int64),  # its destination
            np.zeros(slots, dtype=np.int64),  # the frame it ends at
            np.zeros((b, n), dtype=np.int64),  # each node's earliest end
            self.dest,
            float(cfg.session_mean_active),
            float(-np.expm1(-cfg.frame_ms / (1000.0 * cfg.session_duration_s))),
            float(cfg.session_rate_spread),
        )
        self._burst = np.zeros((b, n), dtype=np.int8)
        high, low = dyn.burst_rates(cfg, self._base_rate)
        self._rate_hl = np.stack([low, high])
        self._p_leave = -np.expm1(-cfg.frame_ms / np.array([cfg.burst_low_ms, cfg.burst_high_ms]))
        self._next_event = np.zeros((b, n))
        self._proc_rate = np.zeros((b, n))
        if cfg.traffic == "sessions":
            self._dest_kernel = np.full((b, n), dyn.DEST_BY_SERVICE, dtype=np.int64)
            self._dest_w = np.zeros((b, n, n))
        prof = np.asarray(cfg.load_profile or np.zeros((0, 2)), dtype=np.float64)
        self._profile = (np.ascontiguousarray(prof[:, 0]), np.ascontiguousarray(prof[:, 1]))
        dyn.traffic_reset(
            dyn.TRAFFIC_CODE[cfg.traffic],
            self._base_rate,
            self._sessions,
            self._burst,
            self._p_leave,
            self._next_event,
            self._proc_rate,
            self._dest_w,
            self.dyn_rng,
        )
        self._traffic_frame()

    def _traffic_frame(self) -> None:
        """Advance the traffic process to the frame about to run (self.frame)."""
        cfg = self.cfg
        dyn.traffic_frame(
            dyn.TRAFFIC_CODE[cfg.traffic],
            self.frame,
            cfg.frame_ms,
            self._base_rate,
            self._sessions,
            self._burst,
            self._rate_hl,
            self._p_leave,
            self._next_event,
            self._proc_rate,
            *self._profile,
            cfg.load_profile_interp == "linear",
            cfg.load,
            self.dyn_rng,
            self._rate_per_ms,
            self._dest_w,
            self.next_arr,
            self.refused_services,
        )

    def _move(self) -> None:
        """Move the nodes to their positions of the frame about to run; relink on schedule."""
        cfg = self.cfg
        step_m = cfg.speed_mps * cfg.frame_ms / 1000.0
        dyn.move(self.positions_m, self._waypoints, step_m, cfg.area_m, self.dyn_rng)
        if self.frame[0] % cfg.route_every == 0:
            dyn.relink(
                self.positions_m,
                cfg.range_m,
                *dyn.link_constants(cfg),
                self.adjacency,
                self.hops,
                self.next_hop,
                self.per,
            )
            self.degree = self.adjacency.sum(axis=2)

    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    @property
    def n_nodes(self) -> int:
        return self.cfg.n_nodes

    def queued(self) -> np.ndarray:
        """Packets in all queues, per network."""
        return self.q_len.sum(axis=(1, 2))

    # ---- network-wide state (for the genie references, which no node could compute) ------
    def offered_ppf(self) -> np.ndarray:
        """Each node's offered rate in the frame about to run, packets per frame, (B, N)."""
        return self._rate_per_ms * self.cfg.frame_ms

    def offered_by_destination(self) -> np.ndarray:
        """O[b, s, d]: packets per frame node s offers toward d in the frame about to run."""
        n = self.n_nodes
        rate = self.offered_ppf()
        if self.cfg.traffic == "sessions":
            total = self._dest_w.sum(axis=2, keepdims=True)
            return rate[..., None] * np.where(
                total > 0, self._dest_w / np.maximum(total, 1e-300), 0
            )
        share = np.where(self.dest[..., None] >= 0, 0.0, 1.0 / (n - 1))
        share = np.broadcast_to(share, (*rate.shape, n)).copy()
        rows, nodes = np.nonzero(self.dest >= 0)
        share[rows, nodes, self.dest[rows, nodes]] = 1.0
        share[:, np.arange(n), np.arange(n)] = 0.0
        return rate[..., None] * share

    def carried_now_ppf(self) -> np.ndarray:
        """Packets per frame each node would carry (own + relayed) at today's rates and routes."""
        own = np.ascontiguousarray(self.offered_by_destination())
        return push_along_routes(own, self.next_hop, self.hops).sum(axis=2)

    def queued_by_destination(self) -> np.ndarray:
        """Q[b, i, d]: packets queued at node i (both queues) toward destination d."""
        return dyn.queued_by_destination(
            self.q_dst, self.q_head, self.q_len, self.cfg.queue_capacity, self.n_nodes
        )

    def mean_field(self, obs: np.ndarray | None = None) -> np.ndarray:
        """Mean of the 1-hop neighbours' observations (paper Eq. 11), shape (B, N, 4)."""
        obs = self.obs if obs is None else obs
        summed = np.einsum("bij,bjk->bik", self.adjacency.astype(np.float32), obs)
        return summed / np.maximum(self.degree, 1)[..., None].astype(np.float32)

    # ---- one frame -------------------------------------------------------------------
    def step(self, demands: np.ndarray) -> FrameResult:
        """Advance every network one frame with the given RB demands, shape (B, N)."""
        cfg = self.cfg
        d = check_demands(demands, (self.batch_size, self.n_nodes))
        b, n = d.shape
        reward = np.empty((b, n))
        grants = np.empty((b, n), dtype=np.int64)
        stats = np.empty((b, N_STATS))
        delivered_to = np.empty((b, n))
        dropped_at = np.empty((b, n))
        obs = np.empty((b, n, 4), dtype=np.float32)
        min_delay = np.empty(b)
        parallel = b >= PARALLEL_MIN_BATCH and nb.get_num_threads() > 1
        (_step_parallel if parallel else _step_serial)(
            d,
            cfg.slots,
            cfg.channels,
            cfg.queue_capacity,
            cfg.max_retries,
            _SCHED[cfg.scheduling],
            cfg.frame_ms,
            self.next_hop,
            self.per,
            self._rate_per_ms,
            self._dest_kernel,
            self._dest_w,
            self.positions_m,
            cfg.range_m**2,
            cfg.mobile,
            self.link_tx,
            self.hops,
            self.rerouted,
            self.q_time,
            self.q_dst,
            self.q_retry,
            self.q_head,
            self.q_len,
            self.next_arr,
            self.rng,
            self.frame,
            self.last_delay,
            obs,
            reward,
            grants,
            stats,
            delivered_to,
            dropped_at,
            min_delay,
            self._cells,
            self._owner,
            *self._pend,
        )
        self.obs = obs
        self.totals += stats
        if cfg.mobile:
            self._move()
        if cfg.traffic != "poisson" or cfg.load_profile is not None:
            self._traffic_frame()
        return FrameResult(obs, reward, grants, stats, delivered_to, dropped_at, min_delay)


def check_demands(demands: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Demands as float64 of the given shape; raises ActionError naming what is wrong."""
    try:
        d = np.asarray(demands, dtype=np.float64)
    except (TypeError, ValueError):
        raise ActionError(f"actions: expected numbers of RBs with shape {shape}") from None
    if d.shape != shape:
        if d.size == int(np.prod(shape)):
            d = d.reshape(shape)
        else:
            raise ActionError(f"actions: expected shape {shape} (networks, nodes), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ActionError("actions: every demand must be a finite number of RBs (got NaN or inf)")
    if np.any(d < 0):
        raise ActionError("actions: demands must be >= 0 RBs (values above M x L are clipped)")
    return np.ascontiguousarray(d)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or int(seed) < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)
