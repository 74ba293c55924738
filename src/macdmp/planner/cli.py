"""The ``macdmp train`` subcommand; :func:`register` adds it to an argparse subparsers object."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from macdmp.planner.models import PRESETS, PlannerConfig, make_config


def open_dataset(path: str, horizon: int, gamma: float) -> Any:
    """Open the training windows of a dataset file (``macdmp.data.windows.open_windows``)."""
    from macdmp.data.windows import open_windows

    return open_windows(path, horizon=horizon, gamma=gamma)


def _parse_value(name: str, text: str, kind: Any) -> Any:
    kind_s = str(kind)
    try:
        if "bool" in kind_s:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if "tuple" in kind_s:
            return tuple(int(v) for v in text.replace("(", "").replace(")", "").split(",") if v)
        if "int" in kind_s:
            return int(text)
        if "float" in kind_s:
            return float(text)
        return text
    except ValueError:
        raise ValueError(f"--set {name}: cannot read {text!r} as {kind_s}") from None


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed overrides of PlannerConfig fields."""
    fields = {f.name: f.type for f in dataclasses.fields(PlannerConfig)}
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value (got {item!r})")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(f"--set: unknown key {key!r}; known keys: {', '.join(sorted(fields))}")
        out[key] = _parse_value(key, text, fields[key])
    return out


def build_config(preset: str, no_mf: bool, sets: list[str]) -> PlannerConfig:
    """The configuration a ``macdmp train`` command line asks for."""
    overrides = parse_sets(sets)
    if no_mf:
        overrides["use_mf"] = False
    return make_config(preset, **overrides)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to an ``argparse`` subparsers object; the handler is ``args.func``."""
    p = subparsers.add_parser(
        "train",
        help="train MA-CDMP's noise model, classifier and inverse dynamics on a dataset",
        description="Joint training by Eq. 19. Re-running the same command resumes the run.",
    )
    p.add_argument("--data", required=True, help="dataset file written by the data collector")
    p.add_argument("--out", required=True, help="run folder (created; resumed if it has a run)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="default: demo")
    p.add_argument("--no-mf", action="store_true", help="MA-CDMP w/o MF: model x alone")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        nargs="+",
        help="override a configuration field (repeatable); keys: "
        + ", ".join(f.name for f in dataclasses.fields(PlannerConfig)),
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``macdmp train``; returns the exit status."""
    from macdmp.planner.checkpoint import CheckpointMismatchError
    from macdmp.planner.train import Trainer

    sets = [s for group in args.sets for s in (group if isinstance(group, list) else [group])]
    try:
        cfg = build_config(args.preset, args.no_mf, sets)
        data = open_dataset(args.data, cfg.horizon, cfg.gamma)
        trainer = Trainer(cfg, data, args.out, args.device)
    except (ValueError, FileNotFoundError, CheckpointMismatchError) as e:
        print(f"macdmp train: error: {e}", file=sys.stderr)
        return 2
    if trainer.step:
        print(f"resuming {args.out} at step {trainer.step}/{cfg.total_steps}", file=sys.stderr)
    print(
        f"device {trainer.device}; {cfg.total_steps} steps; run folder {args.out}", file=sys.stderr
    )
    try:
        path = trainer.run(progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted at step {trainer.step}; checkpoint saved, re-run to resume",
            file=sys.stderr,
        )
        return 130
    last = Path(args.out) / "losses.jsonl"
    tail = last.read_text().splitlines()[-1:] if last.exists() else []
    print(
        json.dumps(
            {
                "checkpoint": str(path),
                "step": trainer.step,
                "last": json.loads(tail[0]) if tail else None,
            }
        )
    )
    return 0
