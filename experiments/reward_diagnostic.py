"""Can a return see the agent's own decision? The correlation table of issue 11, for any dataset.

For every agent of the first trajectories of each scenario, at frames t = 0, EVERY, 2 EVERY, ...
take its behaviour noise log(a_t / base_t), base_t being the noiseless `carried` split (the
behaviour policy's mean demand), and its discounted H-frame return from t on,
sum_{h<H} gamma^h r_{t+h}, with r built by each reward choice (macdmp.data.rewards). Print the
Pearson correlation of the two, pooled over scenarios, trajectories, agents and starts (and per
scenario). A reward whose return does not correlate with the agent's own noise cannot tell the
classifier which of the agent's own futures is better (docs/guidance-study.md).

    PYTHONPATH=src python experiments/reward_diagnostic.py paper.h5 \\
        [--rewards delay,own-backlog] [--trajectories 150] [--frames 3000] [--every 5] \\
        [--horizon 16] [--gamma 0.99] [--json out.json]

Frames where a policy demanded 0 RBs (possible in mixed datasets) have no log noise and are
left out; their count is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from macdmp.data.format import load_scenario_arrays, open_h5, read_header
from macdmp.data.rewards import REWARDS, frame_rewards


def noise_and_returns(
    arrays: dict[str, np.ndarray], rbs: float, rewards: list[str], horizon: int, gamma: float,
    every: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """Flattened log-noise and, per reward, the discounted H-frame return at the same points."""
    act = arrays["actions"].astype(np.float64)  # (T, F, N)
    carried = arrays["carried_ppf"]  # (T, N)
    base = carried / carried.sum(axis=1, keepdims=True) * rbs
    f = act.shape[1]
    starts = np.arange(0, f - horizon + 1, every)
    with np.errstate(divide="ignore"):
        noise = np.log(act[:, starts] / base[:, None, :])
    disc = gamma ** np.arange(horizon)
    out = {}
    for reward in rewards:
        r = frame_rewards(reward, arrays).astype(np.float64)
        # windows (T, S, N, H) -> discounted sums
        idx = starts[:, None] + np.arange(horizon)
        out[reward] = np.einsum("tshn,h->tsn", r[:, idx], disc).reshape(-1)
    return noise.reshape(-1), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="dataset file (macdmp collect)")
    p.add_argument("--rewards", default=",".join(REWARDS), help="comma list of reward choices")
    p.add_argument("--trajectories", type=int, default=150, help="first T of each scenario")
    p.add_argument("--frames", type=int, default=3000, help="first F frames of each")
    p.add_argument("--every", type=int, default=5, help="a start every this many frames")
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--json", help="also write the table as JSON here")
    args = p.parse_args(argv)
    rewards = [r for r in args.rewards.split(",") if r]
    bad = [r for r in rewards if r not in REWARDS]
    if bad or not rewards:
        p.error(f"--rewards: {bad or rewards} not among {', '.join(REWARDS)}")
    for name in ("trajectories", "frames", "every", "horizon"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: must be >= 1")
    t0 = time.perf_counter()
    noise_all: list[np.ndarray] = []
    skipped = 0
    ret_all: dict[str, list[np.ndarray]] = {r: [] for r in rewards}
    per_scenario: dict[str, dict[str, float]] = {}
    keys = ("obs", "actions", "rewards", "dropped", "adjacency", "carried_ppf")
    with open_h5(args.data) as f:
        header = read_header(f, args.data)
        for name, s in header.scenarios.items():
            t = min(args.trajectories, s.n_trajectories)
            fr = min(args.frames, s.n_frames)
            if fr < args.horizon:
                p.error(f"--frames: {fr} frames are fewer than --horizon {args.horizon}")
            arrays = load_scenario_arrays(f, header, name, keys)
            cut = {k: v[:t] for k, v in arrays.items()}
            for k in ("actions", "rewards", "dropped"):
                if k in cut:
                    cut[k] = cut[k][:, :fr]
            cut["obs"] = cut["obs"][:, : fr + 1]
            noise, rets = noise_and_returns(cut, s.config.rbs, rewards, args.horizon,
                                            args.gamma, args.every)  # fmt: skip
            ok = np.isfinite(noise)
            skipped += int((~ok).sum())
            noise_all.append(noise[ok])
            per_scenario[name] = {}
            for r in rewards:
                ret_all[r].append(rets[r][ok])
                per_scenario[name][r] = float(np.corrcoef(noise[ok], rets[r][ok])[0, 1])
    noise = np.concatenate(noise_all)
    pooled = {r: float(np.corrcoef(noise, np.concatenate(ret_all[r]))[0, 1]) for r in rewards}
    print(f"{args.data}: {len(noise):,} (agent, start) points, the first (up to) "
          f"{args.trajectories} trajectories x {args.frames} frames of each scenario, a start "
          f"every {args.every} frames, H = {args.horizon}, gamma = {args.gamma} "
          f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip
    if skipped:
        print(f"left out {skipped:,} points where the demand was 0 RBs (no log noise)")
    names = list(per_scenario)
    print()
    print("| return built from | pooled | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for r in rewards:
        cells = " | ".join(f"{per_scenario[n][r]:+.3f}" for n in names)
        print(f"| `{r}` | {pooled[r]:+.3f} | {cells} |")
    if args.json:
        tmp = f"{args.json}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump({"data": args.data, "settings": vars(args), "pooled": pooled,
                       "per_scenario": per_scenario, "points": int(len(noise)),
                       "skipped": skipped}, fh, indent=2)  # fmt: skip
        os.replace(tmp, args.json)  # atomic: a stopped run leaves no half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
