"""Does a clone of maxweight drift out of the states maxweight visits? (adaptive study, 5d)

For each trained run P (a clone of maxweight), two roll-outs on the same held-out networks:
maxweight acting, and P acting. In every frame both are asked for the demand of every agent,
so P's error against maxweight's demand is measured on maxweight's own states and on the
states P itself leads the network into; a state is described by the backlogs (each node's,
and the network's mean, on which maxweight's split of the frame depends).

    python drift.py --scenarios S1,S2 --runs RUN1,RUN2 [--seeds 3] [--frames 1000] [--rf ideal]

RUN is any run folder spec of ``macdmp evaluate --policy`` (``bcmf/seed-0,checkpoint=best``);
separate several with ``;``. Prints one table row per (run, who acts) and writes --out (JSON).
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
from macdmp.sim.seeds import eval_seeds


class Probe(Policy):
    """Acts as ``actor``; every frame also asks ``clone`` and maxweight, and records all three
    with each agent's backlog (the probe is per scenario: one ``run_episodes`` call)."""

    def __init__(self, actor: str, clone: Policy, expert: Policy) -> None:
        self.actor, self.clone, self.expert = actor, clone, expert
        self.name = f"probe({actor})"
        self.rows: list[np.ndarray] = []

    def reset(self, sim) -> None:
        super().reset(sim)
        self.clone.reset(sim)
        self.expert.reset(sim)

    def act(self, obs, mean_field):
        mine = self.clone.act(obs, mean_field)
        best = self.expert.act(obs, mean_field)
        q = backlog(obs)
        # per agent: backlog, the network's mean backlog, clone's demand, expert's demand
        net = np.broadcast_to(q.mean(axis=1, keepdims=True), q.shape)
        self.rows.append(np.stack([q, net, mine, best], axis=-1).reshape(-1, 4))
        return mine if self.actor == "clone" else best


def summarize(rows: np.ndarray, net99_expert: float, scale: float) -> dict:
    """The clone's error on these states, overall and split by whether the network's mean
    backlog lies above the 99% quantile of maxweight's own roll-outs (maxweight's demand
    depends on every node's backlog, so the network's is the state that matters)."""
    q, net, mine, best = rows.T
    err = (mine - best) ** 2
    out_of = net > net99_expert
    return {
        "agent_frames": int(len(q)),
        "backlog_mean": float(q.mean()),
        "network_backlog_p99": float(np.quantile(net, 0.99)),
        "share_above_expert_p99": float(out_of.mean()),
        "nmse": float(err.mean() / scale),
        "nmse_within": float(err[~out_of].mean() / scale) if (~out_of).any() else None,
        "nmse_above": float(err[out_of].mean() / scale) if out_of.any() else None,
        "share_of_error_above": float(err[out_of].sum() / max(err.sum(), 1e-12)),
        "clone_demand_mean": float(mine.mean()),
        "expert_demand_mean": float(best.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--runs", required=True, help="run specs separated by ';'")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--rf", default="ideal")
    ap.add_argument("--out", default="drift.json")
    args = ap.parse_args()
    seeds = eval_seeds(args.seeds)
    configs = [load_scenario(s, rf=args.rf) for s in args.scenarios.split(",")]
    results = []
    header = (
        f"{'run':40s} {'acts':8s} {'delay':>7s} {'loss':>6s} {'q mean':>7s} {'net99':>6s} "
        f"{'>p99*':>6s} {'NMSE':>6s} {'within':>7s} {'above':>7s} {'err>':>5s}"
    )
    print(header)
    for spec in args.runs.split(";"):
        clone = load_policy(spec.strip())
        collected: dict[str, np.ndarray] = {}
        qos: dict[str, tuple[float, float]] = {}
        for actor in ("expert", "clone"):
            rows, lad, loss = [], [], []
            for cfg in configs:
                probe = Probe(actor, clone, make_policy("maxweight"))
                res = run_episodes(cfg, probe, seeds, args.frames)
                rows.append(np.concatenate(probe.rows))
                lad.append(res.loss_aware_delay_ms)
                loss.append(res.loss_rate)
            collected[actor] = np.concatenate(rows)
            # the evaluator's order: mean over the scenarios per seed, then over the seeds
            qos[actor] = (
                float(np.mean(np.mean(lad, axis=0))),
                float(np.mean(np.mean(loss, axis=0))),
            )
        expert_rows = collected["expert"]
        net99 = float(np.quantile(expert_rows[:, 1], 0.99))
        scale = float(expert_rows[:, 3].var())  # maxweight's demand variance on its own states
        for actor in ("expert", "clone"):
            s = summarize(collected[actor], net99, scale)
            s.update(run=spec, acts=actor, delay_ms=qos[actor][0], loss_rate=qos[actor][1])
            results.append(s)
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            print(
                f"{spec:40.40s} {actor:8s} {s['delay_ms']:7.1f} {100 * s['loss_rate']:5.2f}% "
                f"{s['backlog_mean']:7.1f} {s['network_backlog_p99']:6.0f} "
                f"{100 * s['share_above_expert_p99']:5.1f}% {s['nmse']:6.3f} "
                f"{fmt(s['nmse_within']):>7s} {fmt(s['nmse_above']):>7s} "
                f"{100 * s['share_of_error_above']:4.0f}%",
                flush=True,
            )
    with open(args.out, "w") as f:
        json.dump(
            {"seeds": seeds, "frames": args.frames, "rf": args.rf, "rows": results}, f, indent=1
        )


if __name__ == "__main__":
    main()
