"""`macdmp simulate`: run one policy on a scenario and print its QoS."""

from __future__ import annotations

import argparse
import json

from macdmp.policies import POLICY_NAMES
from macdmp.sim.config import PRESETS, RF_MODES, load_scenario


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a policy on a scenario and print its QoS",
        description="Run a policy on one scenario for E episodes (one network each, seeds "
        "S..S+E-1, stepped as one batch) and print throughput, delay, loss and reward.",
    )
    p.add_argument(
        "--scenario", default="n9-2to7", help=f"preset ({', '.join(PRESETS)}) or a TOML file"
    )
    p.add_argument("--policy", default="carried", help=f"one of: {', '.join(POLICY_NAMES)}")
    p.add_argument("--frames", type=int, default=None, help="frames per episode (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode's network")
    p.add_argument("--episodes", type=int, default=1, help="independent networks (default 1)")
    p.add_argument("--rf", choices=RF_MODES, default=None, help="RF condition (default: ideal)")
    p.add_argument("--load", type=float, default=None, help="override the scenario's load")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--plot", metavar="PNG", help="draw the first network's topology to PNG")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from macdmp.eval.episodes import format_table, run_episodes
    from macdmp.policies import make_policy

    cfg = load_scenario(args.scenario, rf=args.rf)
    if args.load is not None:
        cfg = cfg.replace(load=args.load)
    if args.episodes < 1:
        raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
    if args.seed < 0:
        raise ValueError(f"--seed: must be >= 0, got {args.seed}")
    seeds = list(range(args.seed, args.seed + args.episodes))
    policy = make_policy(args.policy, seed=args.seed)
    res = run_episodes(cfg, policy, seeds, frames=args.frames, progress=not args.json)
    summary = res.summary()
    if args.plot:
        from macdmp.eval.plots import plot_topology

        from .core import BatchedNetworks

        plot_topology(BatchedNetworks(cfg, seeds[:1]).networks[0], cfg, args.plot)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_table([summary]))
        print(
            f"generated {summary['generated']}, delivered {summary['delivered']}, "
            f"dropped {summary['dropped']}, queued {summary['queued']} "
            f"({args.episodes} episode(s) x {res.frames} frames)"
        )
        if args.plot:
            print(f"topology written to {args.plot}")
    return 0
