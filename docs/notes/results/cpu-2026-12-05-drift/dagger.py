"""Is the clone's drift a data problem? DAgger against maxweight (adaptive study, 5d).

A clone of maxweight that reads its own observation and the mean field (an MLP, 8 inputs,
2 x 256, as BC with ``use_mf=true``) is fitted to a maxweight-only dataset, then, for each
iteration, run on training networks while maxweight labels every state it visits (DAgger: the
states come from the clone, the demands from the rule); the labelled states join the data and
the MLP is fitted again from scratch. Every fit is tested on the held-out networks, and its
error against maxweight measured on its own states.

    python dagger.py DATA.h5 --scenarios S1,S2 [--iterations 3] [--rollout-seeds 8]

The roll-outs run on training-range networks (env seeds 2**20 + k, no dataset's of seed 0..15),
the tests on the evaluator's held-out seeds (>= 2**31). Prints a table, writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from macdmp.data.windows import open_windows
from macdmp.policies import Policy, make_policy
from macdmp.policies.episodes import run_episodes
from macdmp.sim.config import load_scenario
from macdmp.sim.seeds import eval_seeds

ROLLOUT_SEED_BASE = 2**20


class Clone(Policy):
    """The fitted MLP as a decentralised policy: (own observation, mean field) -> demand
    (``predict`` also serves the fits of ``ceiling.py`` on other inputs)."""

    decentralized = True
    name = "clone"

    def __init__(self, net: nn.Module, mu: np.ndarray, sd: np.ndarray, ym: float, ys: float):
        self.net, self.mu, self.sd, self.ym, self.ys = net, mu, sd, ym, ys

    def act_agents(self, obs, mean_field):
        return self.predict(np.concatenate([obs, mean_field], axis=1))

    @torch.inference_mode()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Demands from raw features (A, inputs), clipped to the frame's RBs."""
        f = (features - self.mu) / self.sd
        y = self.net(torch.as_tensor(f, dtype=torch.float32)).squeeze(-1).numpy()
        return np.clip(y * self.ys + self.ym, 0.0, self.rbs).astype(np.float64)


class Labelled(Policy):
    """Acts as ``actor``; records every agent's (observation, mean field) and maxweight's
    demand for it (one per scenario: a ``run_episodes`` call)."""

    name = "labelled"

    def __init__(self, actor: Policy) -> None:
        self.actor, self.expert = actor, make_policy("maxweight")
        self.feats: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.mine: list[np.ndarray] = []

    def reset(self, sim) -> None:
        super().reset(sim)
        self.actor.reset(sim)
        self.expert.reset(sim)

    def act(self, obs, mean_field):
        demand = self.actor.act(obs, mean_field)
        self.feats.append(np.concatenate([obs, mean_field], axis=-1).reshape(-1, 8))
        self.labels.append(self.expert.act(obs, mean_field).reshape(-1))
        self.mine.append(np.asarray(demand, dtype=np.float64).reshape(-1))
        return demand


def fit(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> Clone:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    ym, ys = float(y.mean()), float(y.std())
    xt = torch.tensor(((x - mu) / sd).astype(np.float32))
    yt = torch.tensor(((y - ym) / ys).astype(np.float32))
    net = nn.Sequential(
        nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 1),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        i = torch.as_tensor(rng.integers(0, len(xt), 1024))
        loss = (net(xt[i]).squeeze(-1) - yt[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Clone(net.eval(), mu, sd, ym, ys)


def roll(policy: Policy, configs, seeds, frames) -> tuple[np.ndarray, ...]:
    """Run ``policy`` on every config; its states, maxweight's labels, its own demands and the
    loss-aware delay (mean over the scenarios per seed, then over the seeds) and loss."""
    feats, labels, mine, lad, loss = [], [], [], [], []
    for cfg in configs:
        probe = Labelled(policy)
        res = run_episodes(cfg, probe, seeds, frames)
        feats.append(np.concatenate(probe.feats))
        labels.append(np.concatenate(probe.labels))
        mine.append(np.concatenate(probe.mine))
        lad.append(res.loss_aware_delay_ms)
        loss.append(res.loss_rate)
    return (
        np.concatenate(feats),
        np.concatenate(labels),
        np.concatenate(mine),
        float(np.mean(np.mean(lad, axis=0))),
        float(np.mean(np.mean(loss, axis=0))),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--rollout-seeds", type=int, default=8)
    ap.add_argument("--rollout-frames", type=int, default=3000)
    ap.add_argument("--n", type=int, default=400_000, help="windows drawn from DATA")
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rf", default="ideal,limited", help="RF conditions of the tests")
    ap.add_argument("--out", default="dagger.json")
    args = ap.parse_args()
    names = args.scenarios.split(",")
    train_cfgs = [load_scenario(s, rf="ideal") for s in names]
    test_cfgs = {rf: [load_scenario(s, rf=rf) for s in names] for rf in args.rf.split(",")}
    test_seeds = eval_seeds(3)
    rng = np.random.default_rng(args.seed)
    w = open_windows(args.data, horizon=1, gamma=0.99).sample(args.n, rng)
    x = np.concatenate([w["x"][:, 0], w["xbar"][:, 0]], axis=1).astype(np.float64)
    y = w["act"][:, 0].astype(np.float64)
    rows = []
    print(f"{'iteration':>9s} {'rows':>9s} " + " ".join(f"{rf:>16s}" for rf in test_cfgs)
          + f" {'NMSE own':>8s} {'NMSE mw':>8s} {'fit s':>6s}")  # fmt: skip
    for it in range(args.iterations + 1):
        t0 = time.perf_counter()
        clone = fit(x, y, args.steps, args.seed + it)
        fit_s = time.perf_counter() - t0
        row: dict = {"iteration": it, "rows": len(y), "fit_s": round(fit_s, 1)}
        for rf, cfgs in test_cfgs.items():
            _, lab, mine, lad, loss = roll(clone, cfgs, test_seeds, 1000)
            row[rf] = {"loss_aware_delay_ms": lad, "loss_rate": loss}
            if rf == "ideal":  # the clone's error on its own test states, and on maxweight's
                mw_feats, mw_lab, *_ = roll(make_policy("maxweight"), cfgs, test_seeds, 1000)
                scale = float(mw_lab.var())
                row["nmse_own_states"] = float(np.mean((mine - lab) ** 2) / scale)
                pred = clone.act_agents(mw_feats[:, :4], mw_feats[:, 4:])
                row["nmse_maxweight_states"] = float(np.mean((pred - mw_lab) ** 2) / scale)
        rows.append(row)
        print(
            f"{it:9d} {len(y):9d} "
            + " ".join(
                f"{row[rf]['loss_aware_delay_ms']:8.1f} ({100 * row[rf]['loss_rate']:4.2f}%)"
                for rf in test_cfgs
            )
            + f" {row['nmse_own_states']:8.3f} {row['nmse_maxweight_states']:8.3f} {fit_s:6.0f}",
            flush=True,
        )
        if it == args.iterations:
            break
        seeds = [ROLLOUT_SEED_BASE + it * args.rollout_seeds + k for k in range(args.rollout_seeds)]
        feats, lab, *_ = roll(clone, train_cfgs, seeds, args.rollout_frames)
        x, y = np.concatenate([x, feats]), np.concatenate([y, lab])
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "test_seeds": test_seeds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
