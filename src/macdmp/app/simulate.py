"""`macdmp simulate`: run one policy on a scenario and print its QoS."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from macdmp.app.options import (
    MAX_EPISODES,
    MAX_FRAMES,
    MAX_NETWORK_FRAMES,
    option_error,
    out_file,
)
from macdmp.eval.plots import plot_topology
from macdmp.methods.policy import POLICY_HELP, load_policy
from macdmp.policies.episodes import format_table, run_episodes
from macdmp.sim.config import PRESETS, RF_MODES, load_scenario
from macdmp.sim.core import BatchedNetworks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a policy on a scenario and print its QoS",
        description="Run a policy on one scenario for E episodes (one network each, seeds "
        "S..S+E-1, stepped as one batch) and print throughput, delay, loss and reward.",
    )
    p.add_argument(
        "--scenario",
        default="n9-2to7",
        help=f"preset ({', '.join(PRESETS)}), a family's scenario (n9-2to7-sessions, ...; "
        "docs/guide/families.md) or a TOML file",
    )
    p.add_argument("--policy", default="carried", help=POLICY_HELP)
    p.add_argument("--frames", type=int, default=None, help="frames per episode (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode's network")
    p.add_argument("--episodes", type=int, default=1, help="independent networks (default 1)")
    p.add_argument("--rf", choices=RF_MODES, default=None, help="RF condition (default: ideal)")
    p.add_argument("--load", type=float, default=None, help="override the scenario's load")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead (no progress bar)"
    )
    p.add_argument("--plot", metavar="PNG", help="draw the first network's topology to PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    if not 1 <= args.episodes <= MAX_EPISODES:
        raise ValueError(f"--episodes: must be in [1, {MAX_EPISODES:,}] (got {args.episodes:,})")
    if args.seed < 0:
        raise ValueError(f"--seed: must be >= 0 (got {args.seed})")
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        raise ValueError(f"--frames: must be in [1, {MAX_FRAMES:,}] (got {args.frames:,})")
    if args.plot:  # an image: overwritten as before, but never a folder or a device node
        out_file("--plot", args.plot, force=True)
    try:
        cfg = load_scenario(args.scenario, rf=args.rf)
    except ValueError as exc:
        raise option_error("--scenario", exc) from None
    if args.load is not None:
        try:
            cfg = cfg.replace(load=args.load)
        except ValueError as exc:
            raise option_error("--load", exc) from None
    frames = cfg.episode_frames if args.frames is None else args.frames
    if args.episodes * frames > MAX_NETWORK_FRAMES:
        raise ValueError(
            f"--episodes x --frames: {args.episodes:,} x {frames:,} network-frames is above the "
            f"limit of {MAX_NETWORK_FRAMES:,}; lower --episodes or --frames"
        )
    try:
        policy = load_policy(args.policy, seed=args.seed)
    except ValueError as exc:
        raise option_error("--policy", exc) from None
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.episodes))
    show = not (args.json or args.quiet)
    res = run_episodes(cfg, policy, seeds, frames=args.frames, progress=show)
    summary = res.summary()
    if args.plot:
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
