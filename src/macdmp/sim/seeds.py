"""The evaluation protocol (paper Sec. VI-A): held-out scenario seeds, episodes, RF conditions.

Training data uses network seeds below 2**31 (`macdmp collect` refuses others); evaluation
uses seeds from EVAL_SEED_BASE = 2**31 upward, so the two never overlap.
"""

from __future__ import annotations

from collections.abc import Iterable

EVAL_SEED_BASE = 2**31
EVAL_FRAMES = 1000  # 5-second episodes
EVAL_SEEDS = 3


def eval_seeds(n: int = EVAL_SEEDS, offset: int = 0) -> list[int]:
    """The n held-out network seeds of the evaluation protocol."""
    if n < 1 or offset < 0:
        raise ValueError(f"seeds: need n >= 1 and offset >= 0, got n={n}, offset={offset}")
    return [EVAL_SEED_BASE + offset + k for k in range(n)]


def check_disjoint(eval_network_seeds: Iterable[int], train_network_seeds: Iterable[int]) -> None:
    """Refuse evaluation on a network that was in the training data."""
    overlap = sorted(set(eval_network_seeds) & set(train_network_seeds))
    if overlap:
        raise ValueError(
            f"seeds: evaluation seeds {overlap[:5]} also appear in the training data; "
            f"evaluation seeds must be >= {EVAL_SEED_BASE}"
        )
