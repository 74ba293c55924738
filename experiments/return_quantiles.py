"""Where a dataset's horizon returns lie: the raw targets a classifier-free plan can ask for.

MA-CDMP's `cfg` plans ask for a horizon return y (`--policy RUN,target=Y`, raw units), by
default the data's 90% quantile (`ret_best`). The adaptive study's target lever asks for more:
the top of the data's returns. This prints the quantiles of y for one training setting
(horizon, gamma, reward: a run's own), from windows drawn as the training statistics are
(65,536, or all there are, as `WindowDataset.stats` draws them), with each one's z-score:

    PYTHONPATH=src python experiments/return_quantiles.py load100.h5 \\
        [--horizon 16] [--gamma 0.99] [--reward own+neighbours-backlog] \\
        [--quantiles 0.5,0.9,0.99,0.999,1]
"""

from __future__ import annotations

import argparse

import numpy as np

from macdmp.data.rewards import REWARDS
from macdmp.data.windows import STATS_SEED, STATS_WINDOWS, open_windows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--reward", default="own+neighbours-backlog", choices=sorted(REWARDS))
    p.add_argument("--quantiles", default="0.5,0.9,0.99,0.999,1")
    args = p.parse_args(argv)
    try:
        qs = [float(q) for q in args.quantiles.split(",")]
    except ValueError:
        p.error(f"--quantiles: a comma list of numbers in [0, 1] (got {args.quantiles!r})")
    if not all(0.0 <= q <= 1.0 for q in qs):
        p.error(f"--quantiles: each must be in [0, 1] (got {args.quantiles!r})")
    try:  # a bad horizon or gamma, a missing or damaged file: named, before any work
        w = open_windows(args.data, args.horizon, args.gamma, args.reward)
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    n = min(STATS_WINDOWS, w.n_windows)  # the draw of WindowDataset.stats
    y = w.sample(n, np.random.default_rng(STATS_SEED))["y"].astype(np.float64)
    mean, std = float(y.mean()), float(y.std())
    print(f"{args.data}: reward {args.reward}, H = {args.horizon}, gamma = {args.gamma}; "
          f"{n:,} windows: y mean {mean:.1f}, std {std:.1f}")  # fmt: skip
    print("quantile  target (raw)  z")
    for q in qs:
        v = float(np.quantile(y, q))
        print(f"{q:8g}  {v:12.1f}  {(v - mean) / std:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
