"""A method's configuration from names and strings: ``--set key=value``, presets and plans.

The one place where a configuration field is read from text: ``macdmp train --set``, a TOML
plan of runs (``macdmp train --plan``) and the reproduction's scales all go through here, and
the field's own checks run when the config is built (``TrainConfig.__post_init__``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from macdmp.methods.base import TrainConfig, get_method, make_config


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
        for key, value in get_method(method).no_mf_changes.items():
            if key in overrides and overrides[key] != value:
                raise ValueError(
                    f"--set {key}={overrides[key]!r}: --no-mf sets {key}={value!r} (the method's "
                    "w/o MF twin); leave one of them out"
                )
            overrides[key] = value
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps: must be >= 1 (got {steps})")
        overrides["max_steps"] = steps
    if seed is not None:
        overrides["seed"] = seed
    return make_config(method, preset, **overrides)


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
