"""The leaderboard: ``OUT/report.md``, ``OUT/answers.json`` and the figures, from the result
files alone.

One table (rows: the learned methods, the allocators and the references; columns: the families,
under each RF condition of the scale) of the loss-aware delay; a heat map of each method's delay
relative to the best deployable allocator of the family; a bar chart per family; and three
answers per family and RF condition, each by the rule written beside it (:data:`RULES`).

The learned methods are ranked by the checkpoint chosen on the validation seeds (``best.pt``:
the lowest loss-aware delay of the in-loop evaluations, the same rule for every method); the
last checkpoint is reported beside them. A cell is filled only when every unit it reads has a
current result; otherwise it says ``not run`` and why. An answer is given only when every cell
it reads is filled (cells of rows that cannot run here are left out of it, and say why).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from macdmp.common.outputs import atomic_write_text
from macdmp.eval.plots import plt
from macdmp.policies.episodes import LOSS_AWARE, LOSS_PENALTY_MS, with_loss_aware
from macdmp.reproduce.report import result_getter, work_list_lines
from macdmp.reproduce.worklist import Store, write_json_atomic

from .plan import DEPLOYABLE_KIND, LEARNED, REFERENCE_KIND, Bench, Cell, Row

Get = Callable[[str], "dict[str, Any] | None"]
CENTRALIZED = "centralized"
MARGIN = 0.10  # a learned method beats the best deployable allocator by at least 10%
YES, NO, PARTLY, NOT_ANSWERED = "yes", "no", "partly", "not answered"
ABOVE, LEVEL, BELOW = "above", "level", "below"

QUESTIONS = {
    "beats_allocator": "Does a learned method beat the best deployable allocator of the family "
    "by at least 10%, and which?",
    "mean_field": "Does the mean field beat w/o MF?",
    "to_centralized": "How far is the best decentralized policy from the centralized reference?",
}
RULES = {
    "beats_allocator": "The best deployable allocator is the deployable rule (equal, ratio, "
    "proportional, maxweight, backpressure) with the lowest loss-aware delay in the column. A "
    "learned method (its selected checkpoint) beats it by at least 10% when its mean over its "
    "training seeds plus its sample standard deviation over them is at most 90% of the "
    "allocator's delay. Yes, naming each method that does; no otherwise.",
    "mean_field": "Each MA-CDMP variant against its w/o MF twin, paired by network seed: for "
    "every training seed t and held-out network n, d = (w/o MF) - (with MF), the loss-aware "
    "delays of the two selected checkpoints of seed t on network n. The mean field is ahead "
    "when the mean of d is larger than its sample standard deviation over the (t, n) pairs, "
    "behind when -mean is, level otherwise. Yes if it is ahead for every variant present, "
    "partly if for some, no if for none.",
    "to_centralized": "The best decentralized policy is the lowest loss-aware delay among the "
    "learned methods (selected checkpoints) and the deployable allocators; its distance is "
    "(its delay - centralized's) / centralized's. Level when the difference is within the "
    "larger of the two spreads (training seeds for a method, network seeds for an allocator); "
    "above or below otherwise.",
}
KIND_TEXT = {
    LEARNED: "learned",
    DEPLOYABLE_KIND: "deployable",
    REFERENCE_KIND: "reference",
    "data": "data (noisy `carried`)",
}


def _fmt(v: float | None, d: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


@dataclass
class Value:
    """A filled cell: the loss-aware delay (ms)."""

    mean: float
    sd: float  # sample std over the training seeds (learned) or the network seeds (allocator)
    grid: np.ndarray  # [training seed, network seed] (an allocator: one row)
    over: str  # "training seeds" | "network seeds"
    steps: list[int | None] = field(default_factory=list)  # the selected steps (learned)
    total: list[int] = field(default_factory=list)  # the runs' last steps

    def text(self) -> str:
        return f"{_fmt(self.mean)} ± {_fmt(self.sd)}"

    @property
    def spread(self) -> float:
        return 0.0 if not math.isfinite(self.sd) else self.sd


def _row(get: Get, key: str) -> dict[str, Any] | None:
    r = get(key)
    return with_loss_aware(r["rows"][0]) if r is not None and r.get("rows") else None


def _value(keys: list[str], runs: list[str], get: Get, learned: bool) -> Value | None:
    rows = [_row(get, k) for k in keys]
    if not keys or any(r is None for r in rows):
        return None
    grid = np.array([r[LOSS_AWARE + "_seeds"] for r in rows], dtype=float)
    if learned:
        per_seed = grid.mean(axis=1)
        trained = [get(k) or {} for k in runs]
        steps = [(t.get("best") or {}).get("step") for t in trained]
        total = [int(t.get("step", 0)) for t in trained]
        return Value(float(per_seed.mean()), _sd(per_seed), grid, "training seeds", steps, total)
    return Value(float(grid.mean()), _sd(grid[0]), grid, "network seeds")


def _why(cell: Cell, keys: list[str], bench: Bench, store: Store, failures: dict) -> str:
    """Why a cell with units is not filled: what its units lack, in a few words."""
    plan = bench.plan
    reasons: list[str] = []
    for k, run in zip(keys, cell.runs or [None] * len(keys), strict=True):
        st = store.status(plan.units[k])
        if st == "done":
            continue
        if k in failures:
            reasons.append(f"{k} failed ({failures[k]})")
        elif run is not None and run in failures:
            reasons.append(f"its training {run} failed ({failures[run]})")
        elif st == "stale":
            reasons.append(f"{k} is stale (made with other settings)")
        else:
            reasons.append(f"{k} has no result yet")
    n = len(reasons)
    if n == len(keys) and all(r.endswith(" has no result yet") for r in reasons):
        # the common case while a bench is under way: one shared note, not one per cell
        return f"not run: not run yet (none of its {n} evaluations has a result)"
    shown = "; ".join(reasons[:2]) + (f"; and {n - 2} more" if n > 2 else "")
    return f"not run: {n} of {len(keys)} evaluations have no current result ({shown})"


@dataclass
class Board:
    """The leaderboard read from the results: every cell's value or why it has none."""

    bench: Bench
    best: dict[tuple[str, str, str], Value | None]
    last: dict[tuple[str, str, str], Value | None]
    text: dict[tuple[str, str, str], str]  # the table's cell: a value or "not run: why"
    last_text: dict[tuple[str, str, str], str]


def read_board(bench: Bench, get: Get, store: Store) -> Board:
    failures = store.failures()
    best, last, text, last_text = {}, {}, {}, {}
    for (row, fam, rf), cell in bench.cells.items():
        learned = row in bench.methods
        k = (row, fam, rf)
        if cell.missing:
            best[k] = last[k] = None
            text[k] = last_text[k] = cell.missing
            continue
        best[k] = _value(cell.best, cell.runs, get, learned)
        text[k] = best[k].text() if best[k] else _why(cell, cell.best, bench, store, failures)
        if cell.last:
            last[k] = _value(cell.last, cell.runs, get, True)
            last_text[k] = (
                last[k].text() if last[k] else _why(cell, cell.last, bench, store, failures)
            )
    return Board(bench, best, last, text, last_text)


# -- the three answers ---------------------------------------------------------------------------
def _incomplete(board: Board, rows: list[Row], fam: str, rf: str) -> list[str]:
    """The rows among ``rows`` whose cell in the column has units but is not filled."""
    return [
        r.label
        for r in rows
        if not board.bench.cells[(r.name, fam, rf)].missing
        and board.best[(r.name, fam, rf)] is None
    ]


def _answer(answer: str, text: str, which: list[str] | None = None) -> dict[str, Any]:
    return {"answer": answer, "which": which or [], "text": text}


def _not_yet(lost: list[str], reading: dict[str, Any]) -> dict[str, Any]:
    names = ", ".join(lost[:4]) + (f" and {len(lost) - 4} more" if len(lost) > 4 else "")
    return _answer(
        NOT_ANSWERED,
        f"incomplete: {names} {'has' if len(lost) == 1 else 'have'} no current result, and an "
        f"answer waits for every cell it reads. The rule on the cells present would read "
        f"'{reading['answer']}' (not an answer): {reading['text']}",
    )


def answer_beats(board: Board, fam: str, rf: str) -> dict[str, Any]:
    b = board.bench
    learned = [r for r in b.rows if r.kind == LEARNED]
    deploy = [r for r in b.rows if r.kind == DEPLOYABLE_KIND]
    vals = {r.name: board.best[(r.name, fam, rf)] for r in b.rows}
    dep = {r.name: vals[r.name] for r in deploy if vals[r.name] is not None}
    got = {r.label: vals[r.name] for r in learned if vals[r.name] is not None}
    if not dep or not got:
        out = _answer(NOT_ANSWERED, "no deployable allocator or no learned method evaluated.")
    else:
        a = min(dep, key=lambda p: dep[p].mean)
        ref = dep[a].mean
        bound = (1 - MARGIN) * ref
        wins = sorted(
            (m for m, v in got.items() if v.mean + v.spread <= bound), key=lambda m: got[m].mean
        )
        top = min(got, key=lambda m: got[m].mean)
        rel = lambda m: f"{100 * (got[m].mean / ref - 1):+.1f}%"  # noqa: E731
        head = f"the best deployable allocator is `{a}` ({_fmt(ref)} ms); "
        if wins:
            out = _answer(
                YES,
                head
                + "ahead of it by at least 10% beyond their seed spread: "
                + ", ".join(
                    f"{m} ({_fmt(got[m].mean)} ± {_fmt(got[m].sd)} ms, {rel(m)})" for m in wins
                )
                + ".",
                wins,
            )
        else:
            out = _answer(
                NO,
                head + f"the best learned method, {top}, has {_fmt(got[top].mean)} ± "
                f"{_fmt(got[top].sd)} ms ({rel(top)}); the rule asks at most {_fmt(bound)} ms "
                "with the spread added.",
            )
    lost = _incomplete(board, learned + deploy, fam, rf)
    return _not_yet(lost, out) if lost else out


def answer_mean_field(board: Board, fam: str, rf: str) -> dict[str, Any]:
    b = board.bench
    labels = {r.name: r.label for r in b.rows}
    pairs = [(r.name, r.twin) for r in b.rows if r.kind == LEARNED and r.twin in labels]
    if not pairs:
        return _answer(
            NOT_ANSWERED, "not asked: no MA-CDMP variant is benchmarked with its w/o MF twin."
        )
    ahead, parts = [], []
    for mf, nomf in pairs:
        a, z = board.best[(mf, fam, rf)], board.best[(nomf, fam, rf)]
        if a is None or z is None or a.grid.shape != z.grid.shape:
            continue
        d = (z.grid - a.grid).ravel()
        m, s = float(d.mean()), _sd(d) if len(d) > 1 else 0.0
        side = "ahead" if m > s else "behind" if -m > s else "level"
        if side == "ahead":
            ahead.append(labels[mf])
        parts.append(
            f"{labels[mf]}: {side} ({_fmt(a.mean)} ms against w/o MF's {_fmt(z.mean)} ms; "
            f"paired difference {_fmt(m)} ± {_fmt(s)} ms over {len(d)} pairs)"
        )
    if not parts:
        out = _answer(NOT_ANSWERED, "no variant has both its cells filled.")
    else:
        word = YES if len(ahead) == len(parts) else PARTLY if ahead else NO
        out = _answer(word, "the mean field, " + "; ".join(parts) + ".", ahead)
    lost = _incomplete(
        board, [r for r in b.rows if r.name in {n for p in pairs for n in p}], fam, rf
    )
    return _not_yet(lost, out) if lost else out


def answer_centralized(board: Board, fam: str, rf: str) -> dict[str, Any]:
    b = board.bench
    dec = [r for r in b.rows if r.kind in (LEARNED, DEPLOYABLE_KIND)]
    got = {r.label: board.best[(r.name, fam, rf)] for r in dec}
    got = {k: v for k, v in got.items() if v is not None}
    cen = board.best.get((CENTRALIZED, fam, rf))
    if cen is None or not got:
        out = _answer(NOT_ANSWERED, "the centralized reference or every decentralized policy "
                      "has no result.")  # fmt: skip
    else:
        top = min(got, key=lambda k: got[k].mean)
        v = got[top]
        gap = v.mean / cen.mean - 1.0
        side = LEVEL if abs(v.mean - cen.mean) <= max(v.spread, cen.spread) else (
            ABOVE if gap > 0 else BELOW
        )  # fmt: skip
        word = {ABOVE: "above", BELOW: "below", LEVEL: "level with"}[side]
        out = _answer(
            side,
            f"the best decentralized policy, {top}, has {_fmt(v.mean)} ± {_fmt(v.sd)} ms: "
            f"{100 * abs(gap):.1f}% {word if side != LEVEL else 'from, so level with'} "
            f"`centralized` ({_fmt(cen.mean)} ± {_fmt(cen.sd)} ms).",
            [top],
        )
        out["gap"] = round(gap, 4)
    lost = _incomplete(board, [*dec, *(r for r in b.rows if r.name == CENTRALIZED)], fam, rf)
    return _not_yet(lost, out) if lost else out


ANSWERS = {
    "beats_allocator": answer_beats,
    "mean_field": answer_mean_field,
    "to_centralized": answer_centralized,
}


def column_name(fam: str, rf: str, rfs: tuple[str, ...]) -> str:
    return fam if len(rfs) == 1 else f"{fam} ({rf} RF)"


# -- figures -----------------------------------------------------------------------------------
def plot_heatmap(board: Board, path: Path) -> None:
    """Each learned method's delay relative to the best deployable allocator of the column."""
    b = board.bench
    learned = [r for r in b.rows if r.kind == LEARNED]
    cols = b.columns
    z = np.full((len(learned), len(cols)), np.nan)
    for j, (fam, rf) in enumerate(cols):
        dep = [board.best[(r.name, fam, rf)] for r in b.rows if r.kind == DEPLOYABLE_KIND]
        dep = [v.mean for v in dep if v is not None]
        for i, r in enumerate(learned):
            v = board.best[(r.name, fam, rf)]
            if dep and v is not None:
                z[i, j] = 100.0 * (v.mean / min(dep) - 1.0)
    f, ax = plt.subplots(figsize=(2.0 + 1.3 * len(cols), 1.2 + 0.38 * len(learned)))
    lim = max(10.0, float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 10.0)
    lim = min(lim, 200.0)
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(z), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(learned)):
        for j in range(len(cols)):
            t = "not run" if not np.isfinite(z[i, j]) else f"{z[i, j]:+.0f}%"
            ax.text(j, i, t, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), [column_name(f, rf, b.scale.rfs) for f, rf in cols], fontsize=8)
    ax.set_yticks(range(len(learned)), [r.label for r in learned], fontsize=8)
    f.colorbar(im, ax=ax, label="loss-aware delay vs the best deployable allocator (%)")
    ax.set_title("Delay relative to the best deployable allocator (lower is better)", fontsize=9)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def plot_family(board: Board, fam: str, path: Path) -> None:
    """One family: every row's loss-aware delay with its spread, per RF condition."""
    b = board.bench
    rfs = b.scale.rfs
    colors = {LEARNED: "C0", DEPLOYABLE_KIND: "C2", REFERENCE_KIND: "C3", "data": "C7"}
    f, axes = plt.subplots(1, len(rfs), figsize=(6.5 * len(rfs), 1.0 + 0.3 * len(b.rows)))
    axes = np.atleast_1d(axes)
    for ax, rf in zip(axes, rfs, strict=True):
        rows = list(b.rows)
        ys = np.arange(len(rows))
        for y, r in zip(ys, rows, strict=True):
            v = board.best[(r.name, fam, rf)]
            if v is None:
                ax.text(0, y, "  not run", va="center", fontsize=7, color="0.4")
                continue
            ax.barh(y, v.mean, xerr=v.spread, color=colors[r.kind], alpha=0.8, capsize=2)
        dep = [board.best[(r.name, fam, rf)] for r in rows if r.kind == DEPLOYABLE_KIND]
        dep = [v.mean for v in dep if v is not None]
        if dep:
            ax.axvline(min(dep), color="C2", ls="--", lw=1, label="best deployable")
            ax.axvline(0.9 * min(dep), color="C2", ls=":", lw=1, label="10% below it")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(
            ys, [f"{r.label} ({KIND_TEXT[r.kind].split(' ')[0]})" for r in rows], fontsize=7
        )
        ax.invert_yaxis()
        ax.set_xlabel(f"loss-aware delay (ms; lost packets at {LOSS_PENALTY_MS:.0f} ms)")
        ax.set_title(f"{fam}, {rf} RF", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


# -- the report ---------------------------------------------------------------------------------
def _table(
    board: Board,
    text: dict,
    rows: list[Row],
    bold: dict[tuple[str, str], str],
    notes: dict[str, int],
) -> list[str]:
    """A markdown table of ``text`` (row x column); a cell not run shows ``not run (n)``, its
    reason numbered in ``notes`` (listed under the table by ``_notes``)."""
    b = board.bench
    cols = b.columns
    head = " | ".join(column_name(f, rf, b.scale.rfs) for f, rf in cols)
    out = [f"| method | kind | {head} |", "| --- | --- |" + " --- |" * len(cols)]
    for r in rows:
        cells = []
        for fam, rf in cols:
            t = text[(r.name, fam, rf)]
            if t.startswith("not run: "):
                t = f"not run ({notes.setdefault(t.removeprefix('not run: '), len(notes) + 1)})"
            cells.append(f"**{t}**" if bold.get((fam, rf)) == r.name else t)
        out.append(f"| {r.label} | {KIND_TEXT[r.kind]} | " + " | ".join(cells) + " |")
    return out


def _notes(notes: dict[str, int], shown: set[int]) -> list[str]:
    new = [(n, why) for why, n in notes.items() if n not in shown]
    shown.update(n for n, _ in new)
    return ["", "Not run: " + "; ".join(f"({n}) {why}" for n, why in new) + "."] if new else []


def summary_table(board: Board, bold: dict[tuple[str, str], str]) -> list[str]:
    """The leaderboard in brief, for a page that cannot hold the report's (the README): the
    first RF condition's columns, the means without their spreads, the rows with at least one
    result there (a cell without one reads "—"), and one line naming the rows with none."""
    b = board.bench
    rf = b.scale.rfs[0]
    fams = [f for f, r in b.columns if r == rf]
    filled, empty = [], []
    for r in b.rows:
        values = [board.best[(r.name, f, rf)] for f in fams]
        if all(v is None for v in values):
            empty.append(r.label)
            continue
        cells = [
            "—"
            if v is None
            else f"**{v.mean:.1f}**"
            if bold.get((f, rf)) == r.name
            else f"{v.mean:.1f}"
            for f, v in zip(fams, values, strict=True)
        ]
        filled.append(f"| {r.label} | " + " | ".join(cells) + " |")
    out = [f"| method | {' | '.join(fams)} |", "| --- |" + " --- |" * len(fams), *filled]
    if empty:
        out += ["", "No result yet: " + ", ".join(empty) + "."]
    return out


def _settings(b: Bench) -> list[str]:
    sc, base = b.scale, b.scale.base
    c = base.common
    data = (
        f"{sc.data[0]} trajectories x {sc.data[1]} frames per family"
        if sc.data
        else "each family's own size (macdmp.sim.families)"
    )
    return [
        f"- Families: {', '.join(f'`{f}`' for f in b.families)}; datasets: {data}, each "
        "family's behaviour mix (`macdmp collect --family`).",
        f"- Training: every method's `{base.preset}` preset with the scale's overrides "
        f"(macdmp.reproduce.scales `{base.name}`), training seeds "
        f"{', '.join(map(str, base.seeds))}; "
        + (f"{c['max_steps']:,} steps; " if c.get("max_steps") else "")
        + f"a validation point every {c['eval_every']:,} steps on {c.get('eval_seeds', 2)} "
        f"validation seed(s) x {c.get('eval_frames', 200)} frames per scenario (seeds 2^31 + "
        "10^6 onward), which keeps the best checkpoint.",
        f"- Test: {base.eval_seeds} held-out network seeds (2^31 onward) x {base.eval_frames} "
        f"frames on every scenario of the family, {' and '.join(sc.rfs)} RF"
        + (f"; MA-CDMP's planner options {base.planner}" if base.planner else "")
        + ".",
        f"- The metric: the loss-aware delay, (1 - loss) x delay + loss x "
        f"{LOSS_PENALTY_MS:.0f} ms, in ms (lower is better).",
    ]


def write_report(
    bench: Bench, out: str | Path, plots: bool = True, use_stale: bool = False
) -> dict[str, Any]:
    """Write report.md, leaderboard.md (the table in brief), answers.json, heatmap.png and
    bars-FAMILY.png into ``out``; returns the answers.json content. ``use_stale``: also use
    results made with other settings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out)
    stale: list[str] = []
    get = result_getter(bench.plan, store, stale, use_stale)
    board = read_board(bench, get, store)
    b, sc = bench, bench.scale
    rfs = sc.rfs
    answers: dict[str, dict[str, Any]] = {}
    bold: dict[tuple[str, str], str] = {}
    for fam, rf in b.columns:
        col = column_name(fam, rf, rfs)
        answers[col] = {q: fn(board, fam, rf) for q, fn in ANSWERS.items()}
        dep = {
            r.name: board.best[(r.name, fam, rf)]
            for r in b.rows
            if r.kind == DEPLOYABLE_KIND and board.best[(r.name, fam, rf)] is not None
        }
        if dep:
            bold[(fam, rf)] = min(dep, key=lambda p: dep[p].mean)
    cells = {
        r.label: {column_name(f, rf, rfs): board.text[(r.name, f, rf)] for f, rf in b.columns}
        for r in b.rows
    }
    record = {
        "scale": sc.name,
        "families": b.families,
        "methods": b.methods,
        "command": b.command(),
        "answers": answers,
        "cells": cells,
    }
    write_json_atomic(out / "answers.json", record)
    brief = [
        f"Loss-aware delay (ms), {rfs[0]} RF, `{sc.name}` scale, means (learned methods: of the "
        "selected checkpoints over the training seeds). Bold: the best deployable allocator.",
        "",
        *summary_table(board, bold),
    ]
    atomic_write_text(out / "leaderboard.md", "\n".join(brief) + "\n")
    if plots:
        plot_heatmap(board, out / "heatmap.png")
        for fam in b.families:
            plot_family(board, fam, out / f"bars-{fam}.png")

    cmd = b.command()
    n_seeds = len(sc.base.seeds)
    notes: dict[str, int] = {}  # the reasons of the cells not run, numbered
    shown: set[int] = set()
    lines = [
        f"# Benchmark: {sc.name} scale",
        "",
        f"Scale `{sc.name}`: {sc.describe}. Made by `{cmd} --out DIR` and rebuilt from the "
        f"result files in `results/` by `{cmd} --out DIR --report-only`; docs/guide/bench.md "
        "explains the methods, the model selection and the rules of the answers.",
        "",
        "## Leaderboard",
        "",
        f"The loss-aware delay (ms; lower is better). Learned methods: the checkpoint chosen on "
        f"the validation seeds, mean ± sample standard deviation over the {n_seeds} training "
        "seeds of each one's mean over the held-out test networks. Allocators and references: "
        "mean ± sample standard deviation over the test networks. Bold: the best deployable "
        "allocator of the column. `not run` says why a cell is empty.",
        "",
        *_table(board, board.text, b.rows, bold, notes),
        *_notes(notes, shown),
        "",
        "## Answers",
        "",
        "Three answers per family, each by the rule beside it; an answer waits for every cell "
        "it reads.",
        "",
        "| question | rule | " + " | ".join(answers) + " |",
        "| --- | --- |" + " --- |" * len(answers),
    ]
    for q in QUESTIONS:
        cells_ = [f"**{a[q]['answer']}**: {a[q]['text']}" for a in answers.values()]
        lines.append(f"| {QUESTIONS[q]} | {RULES[q]} | " + " | ".join(cells_) + " |")
    lines += [
        "",
        "## Heat map",
        "",
        "![heat map](heatmap.png)",
        "",
        "Each learned method's loss-aware delay (selected checkpoint, mean over the training "
        "seeds) relative to the best deployable allocator of the column; grey: not run.",
        "",
        "## Per family",
        "",
    ]
    for fam in b.families:
        lines += [f"### {fam}", "", f"![{fam}](bars-{fam}.png)", ""]
    learned = [r for r in b.rows if r.kind == LEARNED]
    lines += [
        "## The last checkpoint",
        "",
        "Reported beside the leaderboard, not ranked: each learned method's last checkpoint "
        "(mean ± sample standard deviation over the training seeds), and the step of the "
        "selected checkpoint of each seed (of the run's last step).",
        "",
        *_table(board, board.last_text, learned, {}, notes),
        *_notes(notes, shown),
        "",
        "| method | " + " | ".join(b.families) + " |",
        "| --- |" + " --- |" * len(b.families),
    ]
    for r in learned:
        cells_ = []
        for fam in b.families:
            v = board.best[(r.name, fam, rfs[0])]
            cells_.append(
                "—"
                if v is None
                else ", ".join("n/a" if s is None else str(s) for s in v.steps)
                + f" (of {max(v.total or [0])})"
            )
        lines.append(f"| {r.label} | " + " | ".join(cells_) + " |")
    lines += ["", "## Settings", "", *_settings(b), ""]
    unavailable = sorted({c.missing for c in b.cells.values() if c.missing})
    keys = b.plan.needed()
    lines += work_list_lines(b.plan, store, keys, unavailable, stale, use_stale)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return record
