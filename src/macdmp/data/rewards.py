"""The per-frame reward a training window's return is built from: a choice made when the windows
are built, not when the data is collected (``docs/guide/datasets.md``, "Reward choices";
``docs/guidance-study.md`` says why each exists).

Every choice maps one scenario's stored arrays to r[t, n] (T, F, N) float32, the reward of the
frame run under a_t; larger is better and every choice is <= 0. With B the backlog (generation
plus transmission queue, packets) observed after the frame, ``obs[:, t + 1]``:

    delay                   -delay (ms) of the packets delivered to n (paper Eq. 12, as stored)
    own-backlog             -B_n
    own+neighbours-backlog  -(B_n + mean of B_j over n's 1-hop neighbours j)
    network-backlog         -mean of B_j over every node j of the network
    own-backlog+drops       -(B_n + DROP_PENALTY x packets dropped at n in the frame)

This module is plain NumPy so that configurations can validate a choice without loading data.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

REWARDS = (
    "delay",
    "own-backlog",
    "own+neighbours-backlog",
    "network-backlog",
    "own-backlog+drops",
)
DEFAULT_REWARD = "delay"
# A packet dropped at a node counts as this many packets of backlog for one frame (50 ms of
# delay at 5 ms frames: several times the behaviour policy's mean delay of ~11 ms, docs).
DROP_PENALTY = 10.0
# The stored arrays each choice reads (beyond the obs the backlog comes from).
NEEDS: dict[str, tuple[str, ...]] = {
    "delay": ("rewards",),
    "own-backlog": ("obs",),
    "own+neighbours-backlog": ("obs", "adjacency"),
    "network-backlog": ("obs",),
    "own-backlog+drops": ("obs", "dropped"),
}


def check_reward(reward: str, name: str = "reward") -> str:
    """``reward`` if it is a known choice; otherwise ValueError naming ``name`` and the choices."""
    if reward not in REWARDS:
        raise ValueError(f"{name}: {reward!r} is not one of {', '.join(REWARDS)}")
    return reward


def backlog_after(obs: np.ndarray) -> np.ndarray:
    """(T, F+1, N, 4) observations -> (T, F, N) float32 backlog after each frame (packets)."""
    o = obs[:, 1:]
    return o[..., 0].astype(np.float32) + o[..., 2].astype(np.float32)


def neighbour_mean(adjacency: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of (T, F, N) values over each node's 1-hop neighbours, by a (T, N, N) adjacency or
    a (T, F, N, N) one of each frame (mobile scenarios)."""
    adj = adjacency.astype(np.float32)
    deg = np.maximum(adj.sum(axis=-1), 1.0)
    eq = "tfij,tfj->tfi" if adj.ndim == 4 else "tij,tfj->tfi"
    return np.einsum(eq, adj / deg[..., None], values, optimize=True)


def frame_rewards(reward: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """(T, F, N) float32 per-frame rewards of one scenario under the given choice.

    ``arrays`` holds the scenario's stored arrays (``NEEDS[reward]`` at least); a file without
    one of them (``dropped`` before format version 2) raises ValueError saying so.
    """
    check_reward(reward)
    missing = [k for k in NEEDS[reward] if k not in arrays]
    if missing:
        raise ValueError(
            f"reward: {reward!r} needs the stored arrays {missing}, which this dataset lacks; "
            "re-collect it with this version's `macdmp collect`"
        )
    if reward == "delay":
        return np.asarray(arrays["rewards"], dtype=np.float32)
    b = backlog_after(arrays["obs"])
    if reward == "own-backlog":
        out = b
    elif reward == "own+neighbours-backlog":
        # the backlog after frame t sits in obs row t+1, and so does its graph
        adj = arrays["adjacency_t"][:, 1:] if "adjacency_t" in arrays else arrays["adjacency"]
        out = b + neighbour_mean(adj, b)
    elif reward == "network-backlog":
        out = np.broadcast_to(b.mean(axis=2, keepdims=True), b.shape)
    else:  # own-backlog+drops
        out = b + np.float32(DROP_PENALTY) * arrays["dropped"].astype(np.float32)
    return np.ascontiguousarray(-out, dtype=np.float32)
