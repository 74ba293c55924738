"""Random numbers: one xoshiro256** stream per network, so streams are independent of the batch.

Shared by the frame kernel (`core.py`) and the traffic and mobility processes (`dynamics.py`).
"""

from __future__ import annotations

import numba as nb
import numpy as np


def splitmix64_states(seed: int) -> np.ndarray:
    mask = (1 << 64) - 1
    x = int(seed) & mask
    out = np.empty(4, dtype=np.uint64)
    for k in range(4):
        x = (x + 0x9E3779B97F4A7C15) & mask
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out[k] = z ^ (z >> 31)
    return out


@nb.njit(inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@nb.njit(inline="always")
def uniform(s, b):
    """A float in [0, 1) from network b's stream."""
    s0 = s[b, 0]
    s1 = s[b, 1]
    s2 = s[b, 2]
    s3 = s[b, 3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[b, 0] = s0
    s[b, 1] = s1
    s[b, 2] = s2
    s[b, 3] = s3
    return np.float64(result >> np.uint64(11)) * 1.1102230246251565e-16


@nb.njit(inline="always")
def exp_ms(s, b, rate_per_ms):
    if rate_per_ms <= 0.0:
        return np.inf
    return -np.log(1.0 - uniform(s, b)) / rate_per_ms
