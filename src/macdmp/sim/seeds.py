"""Network seeds: three disjoint ranges, for training data, model selection and the test.

- training: below ``TRAIN_SEED_LIMIT`` = 2**31 (``macdmp collect`` refuses others);
- test (the evaluation protocol of paper Sec. VI-A, ``macdmp evaluate``): ``EVAL_SEED_BASE`` =
  2**31 upward, fewer than ``TEST_SEEDS`` = 10**6 of them;
- validation (the trainer's in-loop evaluations, which choose a run's best checkpoint):
  ``VALIDATION_SEED_BASE`` = 2**31 + 10**6 upward.

So a result is never measured on a network that trained the model or chose its checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

TRAIN_SEED_LIMIT = 2**31
EVAL_SEED_BASE = 2**31
TEST_SEEDS = 10**6  # the test range's size: offsets of eval_seeds stay below it
VALIDATION_SEED_BASE = EVAL_SEED_BASE + TEST_SEEDS
EVAL_FRAMES = 1000  # 5-second episodes
EVAL_SEEDS = 3


def _range(base: int, n: int, offset: int, limit: int | None, what: str) -> list[int]:
    if n < 1 or offset < 0:
        raise ValueError(f"seeds: need n >= 1 and offset >= 0, got n={n}, offset={offset}")
    if limit is not None and offset + n > limit:
        raise ValueError(
            f"seeds: {what} seeds end at offset {limit:,} (the validation range starts there); "
            f"got offset {offset:,} + {n:,} seeds"
        )
    return [base + offset + k for k in range(n)]


def eval_seeds(n: int = EVAL_SEEDS, offset: int = 0) -> list[int]:
    """The n held-out test seeds of the evaluation protocol, from ``offset``."""
    return _range(EVAL_SEED_BASE, n, offset, TEST_SEEDS, "test")


def validation_seeds(n: int, offset: int = 0) -> list[int]:
    """The n validation seeds (model selection), from ``offset``."""
    return _range(VALIDATION_SEED_BASE, n, offset, None, "validation")


def seed_range(seed: int) -> str:
    """Which range a network seed is in: "training", "test" or "validation"."""
    if seed < TRAIN_SEED_LIMIT:
        return "training"
    return "test" if seed < VALIDATION_SEED_BASE else "validation"


def check_disjoint(eval_network_seeds: Iterable[int], train_network_seeds: Iterable[int]) -> None:
    """Refuse evaluation on a network that was in the training data."""
    overlap = sorted(set(eval_network_seeds) & set(train_network_seeds))
    if overlap:
        raise ValueError(
            f"seeds: evaluation seeds {overlap[:5]} also appear in the training data; "
            f"evaluation seeds must be >= {EVAL_SEED_BASE}"
        )
