"""Does a wider message let a clone of maxweight act as well as maxweight? (adaptive study, 5d)

Clones of maxweight (MLPs, 2 x 256, as in ``dagger.py``) fitted on maxweight's own roll-outs
(noise-free, training-range networks), each reading one information set, then run in closed
loop on the held-out networks:

  own+mf                      the agent's observation and its neighbours' mean (BC + MF)
  +network mean               and the network's mean backlog, this frame
  +network mean, late         and the network's mean backlog of the frame before
  +network mean, max, late    and the network's mean and largest backlog of the frame before

The network-wide numbers stand for a message no node has today (one flooded or averaged over
the network, which would arrive at least a frame late in practice).

    python wide.py --scenarios S1,S2 [--train-seeds 16] [--fits 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from dagger import ROLLOUT_SEED_BASE, Labelled, fit

from macdmp.policies import Policy, make_policy
from macdmp.policies.allocators import backlog
from macdmp.policies.episodes import run_episodes
from macdmp.sim.config import load_scenario
from macdmp.sim.seeds import eval_seeds

# name -> (uses the network's max as well, one frame late)
INFO = {
    "own+mf": None,
    "+network mean": (False, False),
    "+network mean, late": (False, True),
    "+network mean, max, late": (True, True),
}
TRAIN_SEED_BASE = ROLLOUT_SEED_BASE + 2**12  # past dagger.py's roll-out networks


def wide(obs: np.ndarray, mf: np.ndarray, prev: np.ndarray | None, info) -> np.ndarray:
    """Per-agent features (B * N, 8 or more) from (B, N, 4) observations and mean fields;
    ``prev`` the (B, N) backlogs of the frame before (None: this frame's stand in)."""
    f = np.concatenate([obs, mf], axis=-1).reshape(-1, 8)
    if info is None:
        return f
    with_max, late = info
    q = backlog(obs) if not late or prev is None else prev
    n = obs.shape[1]
    cols = [np.repeat(q.mean(axis=1), n)]
    if with_max:
        cols.append(np.repeat(q.max(axis=1), n))
    return np.column_stack([f, *cols])


class WideClone(Policy):
    """A fitted clone reading ``info`` (not decentralised: it needs the whole network)."""

    def __init__(self, model, info) -> None:
        self.model, self.info, self.name = model, info, "wide-clone"

    def reset(self, sim) -> None:
        super().reset(sim)
        self.model.rbs = self.rbs
        self.prev = None

    def act(self, obs, mean_field):
        demand = self.model.predict(wide(obs, mean_field, self.prev, self.info))
        self.prev = backlog(obs)
        return demand.reshape(obs.shape[:2])


class Recorder(Labelled):
    """maxweight acting; records its demand and the previous frame's backlogs as well."""

    def __init__(self, actor: Policy) -> None:
        super().__init__(actor)  # lists made here: run_episodes acts through a shallow copy
        self.obs: list[np.ndarray] = []
        self.mfs: list[np.ndarray] = []

    def act(self, obs, mean_field):
        self.obs.append(obs.copy())
        self.mfs.append(mean_field.copy())
        return super().act(obs, mean_field)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--train-seeds", type=int, default=16)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--fits", type=int, default=3, help="fit seeds per information set")
    ap.add_argument("--out", default="wide.json")
    args = ap.parse_args()
    names = args.scenarios.split(",")
    seeds = [TRAIN_SEED_BASE + k for k in range(args.train_seeds)]
    data = {name: ([], []) for name in INFO}
    for s in names:  # maxweight's roll-outs, every information set's features of them
        rec = Recorder(make_policy("maxweight"))
        run_episodes(load_scenario(s, rf="ideal"), rec, seeds, args.frames)
        labels = np.stack(rec.labels)  # (F, B * N)
        for name, info in INFO.items():
            feats = [
                wide(o, m, None if t == 0 else backlog(rec.obs[t - 1]), info)
                for t, (o, m) in enumerate(zip(rec.obs, rec.mfs, strict=True))
            ]
            data[name][0].append(np.concatenate(feats))
            data[name][1].append(labels.reshape(-1))
    test_seeds = eval_seeds(3)
    rows = []
    print("| clone reads | ideal RF | lost | limited RF | lost | per fit seed, ideal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, info in INFO.items():
        x, y = np.concatenate(data[name][0]), np.concatenate(data[name][1])
        res = {"ideal": [], "limited": []}
        t0 = time.perf_counter()
        for k in range(args.fits):
            pol = WideClone(fit(x, y, args.steps, k), info)
            for rf in res:
                lad, loss = [], []
                for s in names:
                    r = run_episodes(load_scenario(s, rf=rf), pol, test_seeds, 1000)
                    lad.append(r.loss_aware_delay_ms)
                    loss.append(r.loss_rate)
                res[rf].append(
                    (float(np.mean(np.mean(lad, axis=0))), float(np.mean(np.mean(loss, axis=0))))
                )
        row = {"info": name, "rows": len(y), "seconds": round(time.perf_counter() - t0)}
        for rf, v in res.items():
            d = np.array([a for a, _ in v])
            row[rf] = {
                "loss_aware_delay_ms": d.tolist(),
                "loss_rate": [b for _, b in v],
                "mean": float(d.mean()),
                "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            }
        rows.append(row)
        cells = [
            f"{row[rf]['mean']:.1f} ± {row[rf]['sd']:.1f} | "
            f"{100 * np.mean(row[rf]['loss_rate']):.2f}%"
            for rf in ("ideal", "limited")
        ]
        per = " / ".join(f"{v:.1f}" for v in row["ideal"]["loss_aware_delay_ms"])
        print(f"| {name} | " + " | ".join(cells) + f" | {per} |", flush=True)
    with open(args.out, "w") as fh:
        json.dump({"args": vars(args), "test_seeds": test_seeds, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
