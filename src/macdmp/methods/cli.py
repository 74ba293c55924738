"""The ``macdmp train`` subcommand: any method, one run or several packed on one device."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from macdmp.methods.base import TrainConfig, get_method, make_config, method_names

CAPTURE_CHOICES = ("auto", "on", "off")


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


def config_fields(method: str) -> dict[str, Any]:
    """Field name -> declared type of a method's configuration."""
    return {f.name: f.type for f in dataclasses.fields(get_method(method).config_class)}


def parse_sets(method: str, items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> typed overrides of the method's configuration fields."""
    fields = config_fields(method)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value (got {item!r})")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(
                f"--set: unknown key {key!r} for method {method}; known keys: "
                f"{', '.join(sorted(fields))}"
            )
        out[key] = _parse_value(key, text, fields[key])
    return out


def build_config(
    method: str,
    preset: str,
    no_mf: bool = False,
    sets: list[str] | dict[str, Any] = (),  # type: ignore[assignment]
    steps: int | None = None,
    seed: int | None = None,
) -> TrainConfig:
    """The configuration a ``macdmp train`` command line (or a plan entry) asks for."""
    overrides = dict(sets) if isinstance(sets, dict) else parse_sets(method, list(sets))
    if no_mf:
        if "use_mf" not in config_fields(method):
            raise ValueError(f"--no-mf: method {method} has no mean field to leave out")
        overrides["use_mf"] = False
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps: must be >= 1 (got {steps})")
        overrides["max_steps"] = steps
    if seed is not None:
        overrides["seed"] = seed
    return make_config(method, preset, **overrides)


def open_dataset(path: str, horizon: int, gamma: float, reward: str = "delay") -> Any:
    """The training windows of a dataset file (``macdmp.data.windows.open_windows``)."""
    from macdmp.data.windows import open_windows

    return open_windows(path, horizon=horizon, gamma=gamma, reward=reward)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected a comma list of integers (got {text!r})") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct integers >= 0 (got {text!r})")
    return seeds


# A plan's keys and their types: a run's own keys, and the file's top level
PLAN_RUN_KEYS = {
    "out": "str",
    "data": "str",
    "method": "str",
    "preset": "str",
    "no_mf": "bool",
    "steps": "int",
    "seed": "int",
    "set": "table",
}
PLAN_TOP_KEYS = {"data": "str", "run": "array of tables"}
_EXPECTED = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "tuple": "a list of integers",
    "table": "a table, e.g. { key = value }",
}


def _type_name(kind: Any) -> str:
    kind_s = str(kind)
    for name in ("bool", "tuple", "int", "float", "table"):
        if name in kind_s:
            return name
    return "str"


def plan_value(where: str, value: Any, kind: Any) -> Any:
    """A plan file's value as ``kind`` (a config field's declared type, or one of
    PLAN_RUN_KEYS'): TOML's own type (an integer where a float is wanted too), or a string
    read exactly as ``--set`` reads it (``"false"`` is false). Anything else raises a ValueError
    naming ``where`` and the type expected."""
    name = _type_name(kind)
    expected = _EXPECTED[name]
    if isinstance(value, str) and name not in ("str", "table"):
        try:
            return _parse_value(where, value, kind)
        except ValueError:
            raise ValueError(f"{where}: expected {expected} (got the string {value!r})") from None
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "tuple": isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
        "table": isinstance(value, dict),
    }[name]
    if not ok:
        got = (
            type(value).__name__
            if not isinstance(value, dict | list)
            else "a TOML " + ("table" if isinstance(value, dict) else "array")
        )
        raise ValueError(f"{where}: expected {expected} (got {got} {value!r})")
    if name == "float":
        return float(value)
    if name == "tuple":
        return tuple(value)
    return value


def plan_sets(path: str, k: int, method: str, table: dict[str, Any]) -> dict[str, Any]:
    """A plan run's ``set`` table, typed and checked as ``--set`` is."""
    fields = config_fields(method)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ValueError(
                f"--plan: {path}: run {k}: set.{key}: unknown key for method {method}; known "
                f"keys: {', '.join(sorted(fields))}"
            )
        out[key] = plan_value(f"--plan: {path}: run {k}: set.{key}", value, fields[key])
    return out


def read_plan(path: str) -> tuple[str | None, list[dict[str, Any]]]:
    """A TOML plan of runs: optional top-level ``data``, then ``[[run]]`` tables with ``out``
    and optionally ``data`` (this run's dataset, instead of the top-level one), ``method``,
    ``preset``, ``no_mf``, ``steps``, ``seed`` and ``set``. Every value is typed
    (:func:`plan_value`); the ``set`` tables are checked against their method in ``_specs``."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--plan: no file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--plan: {path} is not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - set(PLAN_TOP_KEYS))
    if unknown:
        raise ValueError(
            f"--plan: {path}: unknown top-level key {unknown[0]!r}; allowed: "
            f"{', '.join(PLAN_TOP_KEYS)}"
        )
    runs = doc.get("run")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise ValueError(f"--plan: {path} has no [[run]] tables")
    data = doc.get("data")
    if data is not None:
        data = plan_value(f"--plan: {path}: data", data, "str")
    allowed = set(PLAN_RUN_KEYS)
    typed = []
    for k, r in enumerate(runs):
        bad = sorted(set(r) - allowed)
        if bad or "out" not in r:
            raise ValueError(
                f"--plan: run {k + 1} needs 'out' and may have {sorted(allowed)} (got {sorted(r)})"
            )
        typed.append(
            {
                key: plan_value(f"--plan: {path}: run {k + 1}: {key}", v, PLAN_RUN_KEYS[key])
                for key, v in r.items()
            }
        )
    return data, typed


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
        help="the method's preset: demo or paper (every method), also paper-steer, fast and "
        "fast-steer (MA-CDMP); an unknown one is refused with the method's list",
    )
    p.add_argument("--no-mf", action="store_true", help="MA-CDMP w/o MF: model x alone")
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
    from macdmp.outputs import check_output_dir

    for k, s in enumerate(specs):  # a file there, or an unwritable folder: refused before work
        check_output_dir(
            f"--plan: {args.plan}: run {k + 1}: out" if args.plan else "--out", s["out"]
        )
    return data, specs


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``macdmp train``; returns the exit status."""
    from macdmp.methods.checkpoint import CheckpointMismatchError
    from macdmp.methods.trainer import Trainer, TrainingInterrupted, train_packed

    if args.method not in method_names():
        print(
            f"macdmp train: error: --method: {args.method!r} is not one of "
            f"{', '.join(method_names())}",
            file=sys.stderr,
        )
        return 2
    try:
        data_path, specs = _specs(args)
        cfgs = [
            build_config(
                s["method"], s["preset"], s["no_mf"], s["set"], s.get("steps"), s.get("seed")
            )
            for s in specs
        ]
        datasets: dict[tuple[str, int, float, str], Any] = {}
        trainers = []
        for spec, cfg in zip(specs, cfgs, strict=True):
            key = (spec.get("data") or data_path, cfg.horizon, cfg.gamma, cfg.reward)
            if key not in datasets:
                datasets[key] = open_dataset(*key)
            trainers.append(
                Trainer(
                    spec["method"],
                    cfg,
                    datasets[key],
                    spec["out"],
                    args.device,
                    capture=None if args.capture == "auto" else args.capture == "on",
                    compile=args.compile,
                )
            )
    except (ValueError, FileNotFoundError, CheckpointMismatchError, TypeError) as e:
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
    from macdmp.outputs import disk_errors_named

    try:
        with disk_errors_named(", ".join(str(tr.run_dir) for tr in trainers)):
            train_packed(trainers, progress=not args.quiet)
    except TrainingInterrupted as exc:
        print(f"\ninterrupted ({exc})", file=sys.stderr)
        return 130
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
