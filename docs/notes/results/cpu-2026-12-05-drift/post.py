"""Is the clone's gap the RBs it leaves idle? (adaptive study, 5d)

The MAC scales demands down when they ask for more than the frame's M x L RBs but leaves RBs
idle when they ask for less (spec, "Management"), and a node granted more RBs than it has
packets leaves the rest idle too. `maxweight` wastes neither: its demands sum to M x L whenever
the network holds that many packets, and never exceed a node's backlog. A clone's small errors
do both. Two decentralised corrections of a trained clone's demand d, each node on its own:

  clip      min(d, backlog): never ask for more than one holds
  xC        min(C d, backlog): ask C times as much, then clip (the MAC scales the excess down,
            keeping the clone's proportions): the run's own option, ``--policy RUN,boost=C``

Each run on the held-out networks; per row, the loss-aware delay and, under ideal RF, the RBs
left idle per frame while packets wait (M x L minus the RBs that can carry a packet, in frames
whose network holds at least M x L packets; from the demands after the MAC's scaling).

    python post.py --scenarios S1,S2 --runs "RUN1;RUN2" [--factors 1.25,1.5,2] [--validation]

``--validation`` runs the validation networks (2 seeds, where the bench chooses checkpoints)
instead of the 3 held-out test networks: the factor is chosen there.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from macdmp.methods.policy import load_policy
from macdmp.policies import Policy, make_policy
from macdmp.policies.allocators import backlog
from macdmp.policies.episodes import run_episodes
from macdmp.sim.config import load_scenario
from macdmp.sim.seeds import eval_seeds, validation_seeds


class Corrected(Policy):
    """``base``'s demands, clipped to the node's backlog with ``clip``; records the idle RBs of
    each frame whose network holds at least M x L packets."""

    def __init__(self, base: Policy, clip: bool, idle: list) -> None:
        self.base, self.clip, self.idle = base, clip, idle
        self.name = "corrected"

    def reset(self, sim) -> None:
        super().reset(sim)
        self.base.reset(sim)

    def act(self, obs, mean_field):
        d = np.asarray(self.base.act(obs, mean_field), dtype=np.float64)
        q = backlog(obs)
        if self.clip:
            d = np.minimum(d, q)
        total = d.sum(axis=1, keepdims=True)
        granted = d * np.minimum(1.0, self.rbs / np.maximum(total, 1e-12))  # the MAC's scaling
        useful = np.minimum(granted, q).sum(axis=1)
        full = q.sum(axis=1) >= self.rbs
        self.idle.extend((self.rbs - useful[full]).tolist())
        return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--runs", required=True, help="run specs separated by ';'")
    ap.add_argument("--factors", default="1.25,1.5,2")
    ap.add_argument("--validation", action="store_true", help="the 2 validation networks")
    ap.add_argument("--out", default="post.json")
    args = ap.parse_args()
    names = args.scenarios.split(",")
    seeds = validation_seeds(2) if args.validation else eval_seeds(3)
    # (row name, run options, clip here)
    variants = [("as trained", "", False), ("clip", "", True)]
    variants += [(f"x{f}", f",boost={f}", False) for f in args.factors.split(",")]
    runs = [r.strip() for r in args.runs.split(";")]
    rows = []
    print("| policy | correction | ideal RF | lost | limited RF | lost | idle RBs per full frame |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in ["maxweight", *runs]:
        for name, options, clip in variants if spec != "maxweight" else variants[:1]:
            row = {"policy": spec, "correction": name}
            idle: list = []
            for rf in ("ideal", "limited"):
                if spec == "maxweight":
                    base = make_policy("maxweight")
                else:
                    base = load_policy(spec + options)
                pol = Corrected(base, clip, idle if rf == "ideal" else [])
                lad, loss = [], []
                for s in names:
                    r = run_episodes(load_scenario(s, rf=rf), pol, seeds, 1000)
                    lad.append(r.loss_aware_delay_ms)
                    loss.append(r.loss_rate)
                row[rf] = float(np.mean(np.mean(lad, axis=0)))
                row[rf + "_loss"] = float(np.mean(np.mean(loss, axis=0)))
            row["idle_rbs"] = float(np.mean(idle)) if idle else 0.0
            row["full_frames"] = len(idle)
            rows.append(row)
            print(
                f"| {spec} | {name} | {row['ideal']:.1f} | {100 * row['ideal_loss']:.2f}% | "
                f"{row['limited']:.1f} | {100 * row['limited_loss']:.2f}% | "
                f"{row['idle_rbs']:.2f} |",
                flush=True,
            )
    with open(args.out, "w") as fh:
        json.dump({"seeds": seeds, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
