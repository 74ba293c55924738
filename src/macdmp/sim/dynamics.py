"""Traffic that changes and nodes that move: the per-frame processes of dynamic scenarios.

The batched core (`core.py`) calls these kernels once per frame, before the frame itself, for
scenarios whose `traffic`, `load_profile` or `mobility` makes them change along an episode
(`ScenarioConfig.dynamic`). Each network draws from its own dynamics stream (a third
xoshiro256** stream beside the topology's and the packets'), so a network evolves bit for bit
the same alone or in any batch. The processes (docs/guide/simulator.md, "Traffic that changes"):

- sessions: services arrive at each node as a Poisson process (rate mean_active * p per
  frame) and last a geometric number of frames (ending in each frame with probability
  p = 1 - exp(-frame / duration), the exponential lifetime seen at frame boundaries), so the
  stationary number of active services is mean_active. Each carries a rate and a destination;
  the node's offered rate is the sum over its active services, and each packet goes to the
  destination of a service drawn in proportion to its rate. The state starts stationary.
- bursty: a two-state Markov-modulated Poisson source per node; it leaves the high state in a
  frame with probability 1 - exp(-frame / high_ms) and the low state with
  1 - exp(-frame / low_ms) (geometric dwell times drawn on entering a state), and starts in
  the high state with its stationary probability.
- load_profile: the rates scaled by load(t) / load every frame.
- waypoint: random waypoint mobility; every frame each node moves speed x frame toward its
  waypoint and draws a new one uniformly in the area when it gets there; every `route_every`
  frames the links, their PER and the shortest-path routes are recomputed from the positions.

Arrivals stay a Poisson process whose rate is constant within a frame: when a node's rate
changes at a frame boundary its next arrival is drawn afresh from that boundary, which is
exact because the exponential is memoryless.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .config import ScenarioConfig
from .network import BOLTZMANN_DBM_HZ, SPEED_OF_LIGHT_M_S
from .rng import exp_ms, uniform

TRAFFIC_CODE = {"poisson": 0, "sessions": 1, "bursty": 2}
DEST_BY_SERVICE = -2  # kernel marker: draw each packet's destination from its node's services


@nb.njit(inline="always")
def _poisson(s, b, mean):
    """A Poisson count by Knuth's product of uniforms (means here are small)."""
    limit = np.exp(-mean)
    k = 0
    p = uniform(s, b)
    while p > limit:
        k += 1
        p *= uniform(s, b)
    return k


@nb.njit(inline="always")
def profile_load(frames, loads, linear, t):
    """The load at frame t of a profile [(frame, load), ...], repeated with period frames[-1]."""
    m = len(frames)
    period = frames[m - 1]
    if period > 0:
        t = t % period
    k = 0
    while k + 1 < m and frames[k + 1] <= t:
        k += 1
    if not linear or k + 1 >= m:
        return loads[k]
    w = (t - frames[k]) / (frames[k + 1] - frames[k])
    return loads[k] + w * (loads[k + 1] - loads[k])


@nb.njit(inline="always")
def _geometric(s, b, p):
    """Frames >= 1 until an event of probability p per frame (a lifetime or a dwell time)."""
    if p >= 1.0:
        return 1
    return 1 + int(np.log(1.0 - uniform(s, b)) / np.log1p(-p))


@nb.njit(cache=True)
def _add_service(rng, b, i, t, n, base_rate, st):
    """Start one service at node i in frame t; False when the node holds session_max already."""
    sess_rate, sess_dest, sess_end, node_end, fixed_dest, mean_active, p_end, spread = st
    for k in range(sess_rate.shape[2]):
        if sess_rate[b, i, k] == 0.0:
            rate = base_rate / mean_active * (1.0 + spread * (2.0 * uniform(rng, b) - 1.0))
            sess_rate[b, i, k] = max(rate, 1e-300)
            if fixed_dest[b, i] >= 0:
                sess_dest[b, i, k] = fixed_dest[b, i]
            else:
                d = int(uniform(rng, b) * (n - 1))
                sess_dest[b, i, k] = d + 1 if d >= i else d
            sess_end[b, i, k] = t + _geometric(rng, b, p_end)
            node_end[b, i] = min(node_end[b, i], sess_end[b, i, k])
            return True
    return False


@nb.njit(cache=True)
def _node_services(b, i, n, st, dest_w):
    """Node i's offered rate (the sum over its services) and its rate toward each destination."""
    sess_rate, sess_dest = st[0], st[1]
    r = 0.0
    for d in range(n):
        dest_w[b, i, d] = 0.0
    for k in range(sess_rate.shape[2]):
        if sess_rate[b, i, k] > 0.0:
            r += sess_rate[b, i, k]
            dest_w[b, i, sess_dest[b, i, k]] += sess_rate[b, i, k]
    return r


@nb.njit(cache=True)
def traffic_reset(kind, base_rate, st, burst, p_leave, next_event, proc_rate, dest_w, rng):
    """The stationary start of the process of every node (before frame 0).

    sessions: Poisson(mean_active) services, each with a fresh (memoryless) lifetime, and the
    first arrival of a new service; bursty: the state drawn with its stationary probability
    and a dwell time in it.
    """
    n_env, n = base_rate.shape
    sess_rate, sess_end, node_end, mean_active, p_end = st[0], st[2], st[3], st[5], st[6]
    for b in range(n_env):
        for i in range(n):
            if kind == 1:
                for k in range(sess_rate.shape[2]):
                    sess_rate[b, i, k] = 0.0
                    sess_end[b, i, k] = 0
                node_end[b, i] = 1 << 62
                for _ in range(_poisson(rng, b, mean_active)):
                    _add_service(rng, b, i, 0, n, base_rate[b, i], st)
                next_event[b, i] = -np.log(1.0 - uniform(rng, b)) / (mean_active * p_end)
                proc_rate[b, i] = _node_services(b, i, n, st, dest_w)
            elif kind == 2:
                pi_high = p_leave[0] / (p_leave[0] + p_leave[1])  # time share of high
                burst[b, i] = 1 if uniform(rng, b) < pi_high else 0
                next_event[b, i] = _geometric(rng, b, p_leave[burst[b, i]])
            else:
                proc_rate[b, i] = base_rate[b, i]


@nb.njit(cache=True)
def traffic_frame(
    kind,
    t_frame,  # (B,) index of the frame about to run
    frame_ms,
    base_rate,  # (B, N) long-run mean rate, packets per ms
    st,  # sessions: (rate, dest, end frame of each service slot, earliest end, fixed dest,
    #      mean active, p_end, spread); a free slot has rate 0
    burst,  # (B, N) int8 state: 1 high, 0 low
    rate_hl,  # (2, B, N): packets per ms in the low [0] and high [1] state
    p_leave,  # (2,): probability of leaving the low [0] and high [1] state in a frame
    next_event,  # (B, N): next service arrival (frames, continuous) or next burst switch
    proc_rate,  # (B, N): the process's rate now, before the load profile
    prof_frames,  # (P,) profile points (empty: no profile)
    prof_loads,
    prof_linear,
    load,
    rng,  # (B, 4) the dynamics streams
    rate_per_ms,  # in/out (B, N): the rate of the frame
    dest_w,  # out (B, N, N): each node's rate toward each destination (sessions)
    next_arr,  # in/out (B, N)
    refused,  # in/out (B,) services refused because a node held session_max
):
    n_env, n = base_rate.shape
    sess_rate, sess_end, node_end, mean_active, p_end = st[0], st[2], st[3], st[5], st[6]
    for b in range(n_env):
        t = t_frame[b]
        t0 = t * frame_ms
        factor = 1.0
        if len(prof_frames) > 0:
            factor = profile_load(prof_frames, prof_loads, prof_linear, float(t)) / load
        for i in range(n):
            if kind == 1:
                changed = False
                if t >= node_end[b, i]:  # services end at the start of their end frame
                    node_end[b, i] = 1 << 62
                    for k in range(sess_rate.shape[2]):
                        if sess_rate[b, i, k] > 0.0:
                            if sess_end[b, i, k] <= t:
                                sess_rate[b, i, k] = 0.0
                            else:
                                node_end[b, i] = min(node_end[b, i], sess_end[b, i, k])
                    changed = True
                while next_event[b, i] <= t:  # services that arrived since the last frame
                    if not _add_service(rng, b, i, t, n, base_rate[b, i], st):
                        refused[b] += 1
                    next_event[b, i] += -np.log(1.0 - uniform(rng, b)) / (mean_active * p_end)
                    changed = True
                if changed:
                    proc_rate[b, i] = _node_services(b, i, n, st, dest_w)
            elif kind == 2:
                if t >= next_event[b, i]:
                    burst[b, i] = 1 - burst[b, i]
                    next_event[b, i] = t + _geometric(rng, b, p_leave[burst[b, i]])
                proc_rate[b, i] = rate_hl[burst[b, i], b, i]
            r = proc_rate[b, i] * factor
            if r != rate_per_ms[b, i]:
                rate_per_ms[b, i] = r
                next_arr[b, i] = t0 + exp_ms(rng, b, r)


@nb.njit(cache=True)
def _link_per(dist_m, carrier_hz, eirp_dbm, noise_dbm, packet_bits):
    """network.packet_error_rate for one distance (FSPL, BPSK)."""
    lam = SPEED_OF_LIGHT_M_S / carrier_hz
    d = max(dist_m, 1e-3)
    pr = eirp_dbm - 20.0 * math.log10(4.0 * math.pi * d / lam)
    snr = 10.0 ** ((pr - noise_dbm) / 10.0)
    ber = min(0.5 * math.erfc(math.sqrt(snr)), 0.5)
    return -math.expm1(packet_bits * math.log1p(-ber))


@nb.njit(cache=True)
def relink(pos, range_m, carrier_hz, eirp_dbm, noise_dbm, packet_bits, adj, hops, next_hop, per):
    """Links, PER and shortest-path routes of every network from the current positions.

    Routes as `network._routes`: BFS in hops from each destination, the next hop the
    lowest-indexed neighbour one hop closer; -1 (and hops -1) where no path exists.
    """
    n_env, n = pos.shape[0], pos.shape[1]
    queue = np.empty(n, dtype=np.int64)
    r2 = range_m * range_m
    for b in range(n_env):
        for i in range(n):
            for j in range(n):
                dx = pos[b, i, 0] - pos[b, j, 0]
                dy = pos[b, i, 1] - pos[b, j, 1]
                d2 = dx * dx + dy * dy
                linked = i != j and d2 <= r2
                adj[b, i, j] = linked
                if linked:
                    per[b, i, j] = _link_per(
                        math.sqrt(d2), carrier_hz, eirp_dbm, noise_dbm, packet_bits
                    )
                else:
                    per[b, i, j] = 1.0
        for d in range(n):
            for i in range(n):
                hops[b, i, d] = -1
            hops[b, d, d] = 0
            head = 0
            tail = 1
            queue[0] = d
            while head < tail:
                u = queue[head]
                head += 1
                for v in range(n):
                    if adj[b, u, v] and hops[b, v, d] < 0:
                        hops[b, v, d] = hops[b, u, d] + 1
                        queue[tail] = v
                        tail += 1
            for i in range(n):
                next_hop[b, i, d] = -1
                if i == d or hops[b, i, d] < 0:
                    continue
                for v in range(n):
                    if adj[b, i, v] and hops[b, v, d] == hops[b, i, d] - 1:
                        next_hop[b, i, d] = v
                        break


@nb.njit(cache=True)
def move(pos, way, step_m, area_m, rng):
    """One frame of random waypoint: each node moves step_m toward its waypoint."""
    n_env, n = pos.shape[0], pos.shape[1]
    for b in range(n_env):
        for i in range(n):
            dx = way[b, i, 0] - pos[b, i, 0]
            dy = way[b, i, 1] - pos[b, i, 1]
            dist = math.sqrt(dx * dx + dy * dy)
            if dist <= step_m:
                pos[b, i, 0] = way[b, i, 0]
                pos[b, i, 1] = way[b, i, 1]
                way[b, i, 0] = uniform(rng, b) * area_m
                way[b, i, 1] = uniform(rng, b) * area_m
            else:
                pos[b, i, 0] += dx / dist * step_m
                pos[b, i, 1] += dy / dist * step_m


@nb.njit(cache=True)
def draw_waypoints(way, area_m, rng):
    for b in range(way.shape[0]):
        for i in range(way.shape[1]):
            way[b, i, 0] = uniform(rng, b) * area_m
            way[b, i, 1] = uniform(rng, b) * area_m


@nb.njit(cache=True)
def queued_by_destination(q_dst, q_head, q_len, cap, n):
    """Q[b, i, d]: packets queued at node i (both queues) toward destination d."""
    n_env = q_dst.shape[0]
    out = np.zeros((n_env, n, n))
    for b in range(n_env):
        for i in range(n):
            for q in range(2):
                h = q_head[b, i, q]
                for k in range(q_len[b, i, q]):
                    out[b, i, q_dst[b, i, q, (h + k) % cap]] += 1.0
    return out


def link_constants(cfg: ScenarioConfig) -> tuple[float, float, float, int]:
    """(carrier, EIRP + receive gain, noise floor, packet bits) for `relink`."""
    rf = cfg.rf
    noise = BOLTZMANN_DBM_HZ + 10.0 * math.log10(rf.bandwidth_hz) + rf.noise_figure_db
    return rf.carrier_hz, rf.tx_power_dbm + rf.gain_tx_dbi + rf.gain_rx_dbi, noise, cfg.packet_bits


def burst_rates(cfg: ScenarioConfig, base_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """High and low state rates whose stationary mean is base_rate."""
    pi_high = cfg.burst_high_ms / (cfg.burst_high_ms + cfg.burst_low_ms)
    if cfg.burst_kind == "on-off":
        return base_rate / pi_high, np.zeros_like(base_rate)
    low = base_rate / (pi_high * cfg.burst_ratio + 1.0 - pi_high)
    return low * cfg.burst_ratio, low
