"""The benchmark's work list: per family its dataset, every method at each training seed, the
allocators and references of the family; and the leaderboard's cells that read them.

Units are the reproduction's (:class:`~macdmp.reproduce.plan.Unit`), run by its executors:

- ``data-FAMILY``: the family's dataset, collected with its behaviour mix
  (``macdmp collect --family``), at the scale's size;
- ``train-FAMILY-METHOD-sSEED``: one training run on it, with the in-loop evaluation on the
  validation seeds that keeps the best checkpoint (``best.pt``) beside the last;
- ``eval-FAMILY-METHOD-sSEED-best-RF`` and ``...-last-RF``: the run's selected and last
  checkpoints on the family's scenarios with the held-out test seeds;
- ``eval-FAMILY-POLICY-RF``: an allocator or reference on the same networks.

A method is a row of the table (:data:`BENCH_METHODS`, then the methods registered as plugins);
a family and RF condition is a column. A method that cannot run here (not registered, its
configuration refused at this scale, or left out of the scale) has no units, and its cells say
why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from macdmp.eval.sim_study import MAP_POLICIES
from macdmp.methods.base import get_method, method_names, plugin_methods
from macdmp.policies.allocators import DEPLOYABLE, REFERENCES
from macdmp.reproduce.plan import (
    CTDE_METHOD,
    METHODS,
    Figure,
    Plan,
    Series,
    Unit,
    add_unit,
    eval_unit,
    train_config,
)
from macdmp.reproduce.scales import Scale
from macdmp.sim.families import FAMILIES

from .scales import BenchScale, get_scale

# the kinds of row, in the table's order
LEARNED, DEPLOYABLE_KIND, DATA_KIND, REFERENCE_KIND = "learned", "deployable", "data", "reference"
CHECKPOINTS = ("best", "last")  # best: chosen on the validation seeds (the leaderboard's)


@dataclass(frozen=True)
class BenchMethod:
    """A learned row: a registered method with changes to its configuration."""

    name: str  # the row's name: --methods and the unit keys
    label: str
    method: str  # the registered method it trains
    preset: str = ""  # MA-CDMP: the preset whose changes from `paper` it takes
    changes: tuple[tuple[str, Any], ...] = ()  # configuration fields set on top
    twin: str = ""  # its w/o MF twin's row (the mean-field answer pairs them)


def _label(method: str) -> str:
    return {**METHODS, CTDE_METHOD[0]: CTDE_METHOD[1]}.get(method, method)


def _ma_cdmp(name: str, label: str, preset: str) -> tuple[BenchMethod, BenchMethod]:
    changes = tuple(get_method("ma-cdmp").no_mf_changes.items())
    nomf = BenchMethod(f"{name}-nomf", f"{label} w/o MF", "ma-cdmp", preset, changes)
    return BenchMethod(name, label, "ma-cdmp", preset, twin=nomf.name), nomf


BENCH_METHODS: dict[str, BenchMethod] = {
    m.name: m
    for m in (
        *_ma_cdmp("ma-cdmp", "MA-CDMP", "paper"),
        *_ma_cdmp("paper-steer", "MA-CDMP paper-steer", "paper-steer"),
        *_ma_cdmp("fast-steer", "MA-CDMP fast-steer", "fast-steer"),
        *_ma_cdmp("top-steer", "MA-CDMP top-steer", "top-steer"),
        *(BenchMethod(m, _label(m), m) for m in ("ma-dd", "madiff", "ma-td3bc", "ma-cql")),
        *(BenchMethod(m, _label(m), m) for m in ("ma-dt", "ma-diffuser")),
        BenchMethod("bc", "BC", "bc"),
        # filtered behaviour cloning: the loss on the windows whose return is in the best 10%
        BenchMethod("bc-filtered", "%BC", "bc", changes=(("filtered", True),)),
    )
}
ALLOCATOR_ROWS = MAP_POLICIES  # the family map's: deployable rules, the data's, references


def bench_methods(registered: tuple[str, ...] | None = None) -> dict[str, BenchMethod]:
    """Every learned row: the benchmark's methods, then each plugin method as it is."""
    reg = method_names() if registered is None else registered
    plugins = [m for m in plugin_methods() if m in reg and m not in BENCH_METHODS]
    return {**BENCH_METHODS, **{m: BenchMethod(m, m, m) for m in plugins}}


def preset_changes(preset: str) -> dict[str, Any]:
    """The fields in which MA-CDMP's ``preset`` differs from its ``paper`` preset."""
    cls = get_method("ma-cdmp")
    a, b = cls.presets[preset], cls.presets["paper"]
    return {
        f.name: getattr(a, f.name)
        for f in dataclasses.fields(a)
        if getattr(a, f.name) != getattr(b, f.name)
    }


def method_config(scale: Scale, m: BenchMethod, seed: int) -> dict[str, Any]:
    """The full configuration of row ``m``'s run of training seed ``seed`` at this scale: the
    scale's preset and overrides (``reproduce.plan.train_config``), then the variant's changes
    from the ``paper`` preset (the scale's own sizes win over a variant's architecture, so the
    smoke and demo scales stay small), then the row's own changes."""
    extra: dict[str, Any] = {}
    if m.preset:
        extra = {k: v for k, v in preset_changes(m.preset).items() if k not in scale.sized}
    extra.update(dict(m.changes))
    return train_config(scale, m.method, seed, **extra)


@dataclass
class Row:
    name: str
    label: str
    kind: str  # learned | deployable | data | reference
    twin: str = ""


@dataclass
class Cell:
    """The units of one row in one column, or why it has none."""

    best: list[str] = field(default_factory=list)  # one eval per training seed (allocator: one)
    last: list[str] = field(default_factory=list)  # the last checkpoints' evals (learned)
    runs: list[str] = field(default_factory=list)  # the training units
    missing: str = ""  # why the row has no units here ("" when it has)


@dataclass
class Bench:
    scale: BenchScale
    plan: Plan
    families: list[str]
    methods: list[str]  # the learned rows chosen
    rows: list[Row]
    cells: dict[tuple[str, str, str], Cell]  # (row, family, rf)

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(f, rf) for f in self.families for rf in self.scale.rfs]

    def command(self) -> str:
        """The command line that makes (or, with --report-only, rebuilds) this benchmark."""
        sc = self.scale
        text = f"macdmp bench --scale {sc.name}"
        if tuple(self.families) != sc.families:
            text += f" --families {','.join(self.families)}"
        if self.methods != [m for m in bench_methods() if m not in sc.skip]:
            text += f" --methods {','.join(self.methods)}"
        return text


def parse_list(option: str, text: str | None, allowed: list[str]) -> list[str] | None:
    """A comma list of names, each one of ``allowed`` (None: not given)."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(
            f"{option}: {', '.join(bad) or repr(text)} not allowed; use a comma list of "
            f"{', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))


def data_params(scale: BenchScale, name: str) -> dict[str, Any]:
    """The data unit's params: the family's scenarios and behaviour mix (as ``macdmp collect
    --family`` takes them), at the scale's size or the family's own."""
    fam = FAMILIES[name]
    trajectories, frames = scale.data or (fam.trajectories, fam.frames)
    mix = list(fam.behaviour)
    noise, _, sigma = mix[0].partition(":")
    lone = len(mix) == 1 and noise == "behaviour"  # the behaviour policy alone: no mix
    return {
        "kind": "data",
        "scale": scale.name,
        "family": name,
        "scenarios": list(fam.scenarios),
        "trajectories": trajectories,
        "frames": frames,
        "seed": 0,
        "behaviour_noise": float(sigma or 0.5) if lone else 0.5,
        "policies": [] if lone else mix,
    }


def build_bench(
    scale: str | BenchScale,
    families: list[str] | None = None,
    methods: list[str] | None = None,
    registered: tuple[str, ...] | None = None,
) -> Bench:
    """The benchmark's units and cells: ``families`` (default: the scale's) x ``methods``
    (default: every learned row not skipped at this scale) and every allocator and reference."""
    sc = get_scale(scale) if isinstance(scale, str) else scale
    base = sc.base
    if base.common.get("eval_every", 0) <= 0:
        raise ValueError(f"scale {sc.name}: eval_every must be > 0 (the best checkpoint)")
    reg = method_names() if registered is None else registered
    catalogue = bench_methods(reg)
    fams = list(families or sc.families)
    parse_list("--families", ",".join(fams), list(FAMILIES))
    chosen = list(methods) if methods is not None else [m for m in catalogue if m not in sc.skip]
    parse_list("--methods", ",".join(chosen), list(catalogue))

    why: dict[str, str] = {}  # learned rows that cannot run here
    configs: dict[str, tuple[str, dict[str, Any]]] = {}  # row -> (method, seed 0's config)
    for name in chosen:
        m = catalogue[name]
        same = None
        if m.method in reg and name not in sc.skip:
            try:
                configs[name] = (m.method, method_config(base, m, base.seeds[0]))
            except (ValueError, TypeError, ImportError) as exc:
                why[name] = (
                    f"not run: its {sc.name} configuration is refused ({exc}); set the "
                    "overrides in bench/scales.py or reproduce/scales.py"
                )
                continue
            same = next((o for o in configs if o != name and configs[o] == configs[name]), None)
        if name in sc.skip:
            why[name] = f"not run: left out of the {sc.name} scale ({sc.skip[name]})"
        elif m.method not in reg:
            why[name] = f"not run: method {m.method!r} is not registered (macdmp.methods.base)"
        elif same is not None:  # e.g. fast-steer: the smoke sizes replace its architecture
            why[name] = (
                f"not run: at the {sc.name} scale its configuration is {catalogue[same].label}'s "
                "(the scale's sizes replace the variant's architecture), whose row stands for it"
            )

    rows = [Row(n, catalogue[n].label, LEARNED, catalogue[n].twin) for n in chosen]
    for p in ALLOCATOR_ROWS:
        kind = DEPLOYABLE_KIND if p in DEPLOYABLE else REFERENCE_KIND if p in REFERENCES else ""
        rows.append(Row(p, p, kind or DATA_KIND))

    units: dict[str, Unit] = {}
    cells: dict[tuple[str, str, str], Cell] = {}
    figures = []
    for fam in fams:
        data = add_unit(
            units, Unit(f"data-{fam}", "data", data_params(sc, fam), label=f"{fam} dataset")
        )
        for name in chosen:
            m = catalogue[name]
            if name in why:
                for rf in sc.rfs:
                    cells[(name, fam, rf)] = Cell(missing=why[name])
                continue
            runs = []
            for seed in base.seeds:
                key = f"train-{fam}-{name}-s{seed}"
                params = {
                    "kind": "train",
                    "scale": sc.name,
                    "family": fam,
                    "variant": name,
                    "method": m.method,
                    "preset": base.preset,
                    "data": data,
                    "config": method_config(base, m, seed),
                }
                label = f"{m.label}, {fam}, seed {seed}"
                runs.append(add_unit(units, Unit(key, "train", params, (data,), label=label)))
            for rf in sc.rfs:
                cell = Cell(runs=list(runs))
                for seed, run in zip(base.seeds, runs, strict=True):
                    for which in CHECKPOINTS:
                        opts = {"checkpoint": "best"} if which == "best" else {}
                        u = eval_unit(base, units, run, fam, rf, opts)
                        key = f"eval-{fam}-{name}-s{seed}-{which}-{rf}"
                        getattr(cell, which).append(
                            add_unit(units, dataclasses.replace(u, key=key))
                        )
                cells[(name, fam, rf)] = cell
        for p in ALLOCATOR_ROWS:
            for rf in sc.rfs:
                u = eval_unit(base, units, p, fam, rf)
                key = add_unit(units, dataclasses.replace(u, key=f"eval-{fam}-{p}-{rf}"))
                cells[(p, fam, rf)] = Cell(best=[key])
        series = [
            Series(
                r.label,
                [k for rf in sc.rfs for c in [cells[(r.name, fam, rf)]] for k in c.best + c.last],
                missing=cells[(r.name, fam, sc.rfs[0])].missing,
                group=r.kind,
            )
            for r in rows
        ]
        figures.append(
            Figure(fam, FAMILIES[fam].about, "", "", "bench", series, notes=", ".join(sc.rfs))
        )
    return Bench(sc, Plan(base, units, figures), fams, chosen, rows, cells)
