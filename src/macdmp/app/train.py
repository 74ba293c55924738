"""The ``macdmp train`` subcommand: any method, one run or several packed on one device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from macdmp.common.outputs import check_output_dir, disk_errors_named
from macdmp.methods.base import method_names
from macdmp.methods.config import build_config, config_fields, parse_sets, plan_sets, read_plan
from macdmp.methods.loggers import LOGGERS
from macdmp.methods.stacked import train_many
from macdmp.methods.trainer import TrainingInterrupted, open_trainers, train_packed

CAPTURE_CHOICES = ("auto", "on", "off")


STACK_CHOICES = ("auto", "off")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected a comma list of integers (got {text!r})") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct integers >= 0 (got {text!r})")
    return seeds


def _epilog() -> str:
    lines = ["configuration keys for --set, by method:"]
    for name in method_names():
        try:
            keys = ", ".join(sorted(config_fields(name)))
        except Exception:  # a method whose module cannot be imported here
            continue
        lines.append(f"  {name}: {keys}")
    return "\n".join(lines)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to an ``argparse`` subparsers object; the handler is ``args.func``."""
    p = subparsers.add_parser(
        "train",
        help="train a method (MA-CDMP by default) on a dataset; several runs may be packed",
        description="Train one run folder, or several at once on one device (--seeds, --plan). "
        "Re-running the same command resumes every run from its checkpoint.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="dataset file written by `macdmp collect`")
    p.add_argument("--out", help="run folder (created; resumed if it holds a run)")
    p.add_argument(
        "--method", default="ma-cdmp", help=f"one of {', '.join(method_names())} (default ma-cdmp)"
    )
    p.add_argument(
        "--preset",
        default="demo",
        help="the method's preset: demo or paper (every method), also paper-steer, fast, "
        "fast-steer and top-steer (MA-CDMP); an unknown one is refused with the method's list",
    )
    p.add_argument(
        "--no-mf",
        action="store_true",
        help="without the mean field (use_mf=false): MA-CDMP w/o MF models x alone; BC's default",
    )
    p.add_argument("--steps", type=int, help="total optimiser steps (overrides the preset)")
    p.add_argument(
        "--seeds",
        help="comma list of seeds: train one run per seed, packed, in OUT/seed-S folders",
    )
    p.add_argument("--plan", help="TOML file listing several runs to train packed (see docs)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        nargs="+",
        help="override a configuration field (repeatable; keys below)",
    )
    p.add_argument(
        "--eval-every", type=int, help="evaluate the EMA policy every N steps (learning curves)"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument(
        "--capture",
        choices=CAPTURE_CHOICES,
        default="auto",
        help="replay the step as a CUDA graph (auto: on a CUDA device)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the backbones (GPU)")
    p.add_argument(
        "--stack",
        choices=STACK_CHOICES,
        default="auto",
        help="several runs of one method and shapes (--seeds, --plan) as one stacked model in "
        "one captured step (macdmp.methods.stacked); auto: on a CUDA device, when the runs "
        "allow it (else they are packed); off: packed",
    )
    p.add_argument(
        "--logger",
        choices=LOGGERS,
        default="none",
        help="also write losses, learning rate and in-loop evaluations to TensorBoard "
        "(RUN_DIR/tensorboard; pip install 'macdmp[tensorboard]') or Weights & Biases (pip "
        "install wandb); losses.jsonl and evals.jsonl stay the record",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return p


def _specs(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    sets = [s for group in args.sets for s in (group if isinstance(group, list) else [group])]
    if args.eval_every is not None:
        if args.eval_every < 0:
            raise ValueError(f"--eval-every: must be >= 0 (got {args.eval_every})")
        sets.append(f"eval_every={args.eval_every}")
    common = {
        "method": args.method,
        "preset": args.preset,
        "no_mf": args.no_mf,
        "steps": args.steps,
    }
    if args.plan:
        if args.out or args.seeds:
            raise ValueError("--plan: give the runs in the plan, not with --out or --seeds")
        data, runs = read_plan(args.plan)
        data = args.data or data
        specs = []
        for k, r in enumerate(runs):
            spec = {**common, **{key: v for key, v in r.items() if key != "set"}}
            if spec["method"] not in method_names():
                raise ValueError(
                    f"--plan: {args.plan}: run {k + 1}: method: {spec['method']!r} is not one "
                    f"of {', '.join(method_names())}"
                )
            extra = parse_sets(spec["method"], sets)
            extra.update(plan_sets(args.plan, k + 1, spec["method"], r.get("set", {})))
            spec["set"] = extra
            specs.append(spec)
    else:
        data = args.data
        if not args.out:
            raise ValueError("--out: give the run folder (or --plan FILE)")
        seeds = _seeds(args.seeds) if args.seeds else [None]
        specs = []
        for s in seeds:
            out = args.out if s is None else str(Path(args.out) / f"seed-{s}")
            specs.append({**common, "out": out, "seed": s, "set": parse_sets(args.method, sets)})
    outs = [str(Path(s["out"]).resolve()) for s in specs]
    twice = sorted({o for o in outs if outs.count(o) > 1})
    if twice:  # the run folder lock is per process: catch this before any run starts
        raise ValueError(
            f"--plan: two runs write the same folder {twice[0]}; give each run its own out"
        )
    if not data and not all(s.get("data") for s in specs):
        raise ValueError("--data: give the dataset file (or `data` in the plan)")
    for k, s in enumerate(specs):  # a file there, or an unwritable folder: refused before work
        check_output_dir(
            f"--plan: {args.plan}: run {k + 1}: out" if args.plan else "--out", s["out"]
        )
    return data, specs


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``macdmp train``; returns the exit status."""
    if args.method not in method_names():
        print(
            f"macdmp train: error: --method: {args.method!r} is not one of "
            f"{', '.join(method_names())}",
            file=sys.stderr,
        )
        return 2
    try:
        data_path, specs = _specs(args)
        runs = [
            (
                s["method"],
                build_config(
                    s["method"], s["preset"], s["no_mf"], s["set"], s.get("steps"), s.get("seed")
                ),
                s.get("data") or data_path,
                s["out"],
            )
            for s in specs
        ]
        capture = None if args.capture == "auto" else args.capture == "on"
        trainers = open_trainers(runs, args.device, capture, args.compile, logger=args.logger)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"macdmp train: error: {e}", file=sys.stderr)
        return 2
    for tr in trainers:
        state = f"resuming at step {tr.step}" if tr.step else "new"
        print(
            f"{tr.run_dir}: {tr.method.name}, {tr.cfg.total_steps} steps, {state}; "
            f"device {tr.device}{', CUDA graph' if tr.capture else ''}"
            f"{', compiled' if tr.compile else ''}",
            file=sys.stderr,
        )
    stack = args.stack == "auto" and trainers[0].device.type == "cuda" and len(trainers) > 1
    try:
        with disk_errors_named(", ".join(str(tr.run_dir) for tr in trainers)):
            if stack:
                mode, why = train_many(trainers, progress=not args.quiet)
                print(f"{len(trainers)} runs {mode}{f' ({why})' if why else ''}", file=sys.stderr)
            else:
                train_packed(trainers, progress=not args.quiet)
    except TrainingInterrupted as exc:
        print(f"\ninterrupted ({exc})", file=sys.stderr)
        return 130
    finally:
        for tr in trainers:
            tr.close()
    for tr in trainers:
        last = tr.log_path.read_text().splitlines()[-1:]
        print(
            json.dumps(
                {
                    "run": str(tr.run_dir),
                    "method": tr.method.name,
                    "step": tr.step,
                    "wall_s": round(tr.wall_s, 1),
                    "prepare_s": round(tr.compile_s, 1),
                    "last": json.loads(last[0]) if last else None,
                }
            )
        )
    return 0
