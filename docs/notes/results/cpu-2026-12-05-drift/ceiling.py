"""Can what an agent knows predict maxweight's demand in the states a clone visits? (5d)

The first clone of ``dagger.py`` (the same fit: same data, steps and seed) and maxweight each
run on the same training networks; an MLP (own observation + mean field, as the clone) is
fitted to maxweight's demand on one state set's first seeds and tested on its last ones. Its
error there estimates the best any clone with this information can do on those states. Two
more fits read network-wide numbers beside it (the network's mean and largest backlog), what a
wider message would have to carry. The table splits the errors by the network's mean backlog,
with the first clone's own error beside them; errors and the demand's variance are in units of
maxweight's demand variance on its own states.

    python ceiling.py DATA.h5 --scenarios S1,S2 [--rollout-seeds 8] [--test-seeds 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from dagger import ROLLOUT_SEED_BASE, Labelled, fit

from macdmp.data.windows import open_windows
from macdmp.policies import make_policy
from macdmp.policies.episodes import run_episodes
from macdmp.sim.config import load_scenario

BINS = (0, 5, 10, 20, 30, 60, np.inf)  # the network's mean backlog, packets per node


def states(policy, cfgs, seeds, frames):
    """(features, maxweight's labels, the acting policy's demands, the network's mean and
    largest backlog, seed index) of every agent-frame."""
    out = []
    for cfg in cfgs:
        for j, seed in enumerate(seeds):
            probe = Labelled(policy)
            run_episodes(cfg, probe, [seed], frames)
            f = np.concatenate(probe.feats)
            q = (f[:, 0] + f[:, 2]).reshape(-1, cfg.n_nodes)  # each agent's backlog, per frame
            net = np.repeat(q.mean(axis=1), cfg.n_nodes)
            top = np.repeat(q.max(axis=1), cfg.n_nodes)
            out.append(
                (f, np.concatenate(probe.labels), np.concatenate(probe.mine), net, top,
                 np.full(len(net), j))
            )  # fmt: skip
    return [np.concatenate(c) for c in zip(*out, strict=True)]


# What the fit on a state set reads: the clone's information, then network-wide numbers no
# message carries today (what a wider message would have to bring).
INFO = {
    "own+mf": lambda f, net, top: f,
    "+network mean": lambda f, net, top: np.column_stack([f, net]),
    "+network mean, max": lambda f, net, top: np.column_stack([f, net, top]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--rollout-seeds", type=int, default=8)
    ap.add_argument("--test-seeds", type=int, default=2)
    ap.add_argument("--rollout-frames", type=int, default=3000)
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="ceiling.json")
    args = ap.parse_args()
    cfgs = [load_scenario(s, rf="ideal") for s in args.scenarios.split(",")]
    rng = np.random.default_rng(args.seed)
    w = open_windows(args.data, horizon=1, gamma=0.99).sample(args.n, rng)
    x = np.concatenate([w["x"][:, 0], w["xbar"][:, 0]], axis=1).astype(np.float64)
    clone = fit(x, w["act"][:, 0].astype(np.float64), args.steps, args.seed)
    if len({cfg.rbs for cfg in cfgs}) != 1:
        raise SystemExit("--scenarios: give scenarios with the same RBs per frame")
    clone.rbs = cfgs[0].rbs  # the clamp of act_agents, set by reset in a roll-out
    seeds = [ROLLOUT_SEED_BASE + k for k in range(args.rollout_seeds)]  # dagger's first roll-out
    first_test = args.rollout_seeds - args.test_seeds
    result = {}
    print(
        "| states of | network mean backlog | share | demand variance | clone's NMSE | "
        + " | ".join(f"fitted on them: {k}" for k in INFO)
        + " |"
    )
    print("| --- " * (5 + len(INFO)) + "|")
    for who, pol in (("maxweight", make_policy("maxweight")), ("clone", clone)):
        f, lab, mine, net, top, j = states(pol, cfgs, seeds, args.rollout_frames)
        tr, te = j < first_test, j >= first_test
        preds = {}
        for k, (name, info) in enumerate(INFO.items()):
            z = info(f, net, top)
            model = fit(z[tr], lab[tr], args.steps, args.seed + 100 + k)
            model.rbs = clone.rbs
            preds[name] = model.predict(z[te])
        mine_te = clone.act_agents(f[te, :4], f[te, 4:])  # the first clone on these states
        scale = float(lab[te].var()) if who == "maxweight" else result["maxweight"]["scale"]
        rows = []
        for lo, hi in [(0, np.inf), *zip(BINS[:-1], BINS[1:], strict=True)]:
            m = (net[te] >= lo) & (net[te] < hi)
            if not m.any():
                continue
            y = lab[te][m]
            row = {
                "bin": [lo, None if np.isinf(hi) else hi],
                "share": float(m.mean()),
                "label_variance": float(y.var() / scale),
                "clone_nmse": float(np.mean((mine_te[m] - y) ** 2) / scale),
                "fitted_nmse": {
                    n: float(np.mean((p[m] - y) ** 2) / scale) for n, p in preds.items()
                },
            }
            rows.append(row)
            span = "all" if np.isinf(hi) and lo == 0 else f"{lo:g}-{hi:g}"
            print(
                f"| {who} | {span} | {100 * row['share']:.1f}% | {row['label_variance']:.2f} | "
                f"{row['clone_nmse']:.3f} | "
                + " | ".join(f"{v:.3f}" for v in row["fitted_nmse"].values())
                + " |",
                flush=True,
            )
        result[who] = {"scale": scale, "rows": rows}
    with open(args.out, "w") as fh:
        json.dump({"args": vars(args), "result": result}, fh, indent=1)


if __name__ == "__main__":
    main()
