"""Figs. 3-9 from the result files: one PNG each, its table, and a verdict by the written rule.

Every function here reads only result files (through ``get(key) -> dict | None``), never a run
folder or the dataset, so the report can be rebuilt from the committed results alone on any
machine. A verdict is one of ``VERDICTS``; ``not tested`` where nothing exists to compare, and
(``judge``) for any figure with a unit that has no current result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from macdmp.eval.plots import plot_qos_bars, plt
from macdmp.policies.episodes import LOSS_AWARE, LOSS_PENALTY_MS, with_loss_aware
from macdmp.reproduce.plan import TRAINED_NODE_COUNTS, Figure, Series

HOLDS, PARTLY, NOT, UNTESTED = "holds", "holds partly", "does not hold", "not tested"
VERDICTS = (HOLDS, PARTLY, NOT, UNTESTED)
Get = Callable[[str], "dict[str, Any] | None"]


@dataclass
class Outcome:
    verdict: str
    why: str
    table: list[str] = field(default_factory=list)  # markdown lines
    missing: list[str] = field(default_factory=list)  # what the figure lacks


def _fmt(v: float, d: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _missing(series: list[Series], get: Get) -> list[str]:
    out = []
    for s in series:
        if s.missing:
            out.append(f"{s.label}: {s.missing}")
            continue
        lost = [k for k in s.keys if get(k) is None]
        if lost:
            out.append(f"{s.label}: no result yet for {', '.join(lost)}")
    return out


def incomplete(fig: Figure, get: Get) -> list[str]:
    """The keys of the figure's units that have no current result (not run yet, failed at
    their last attempt, or stale). A series with no units at all (a method not available at
    this scale) is not counted: it can never be run."""
    return [k for s in fig.series for k in s.keys if get(k) is None]


def judge(fig: Figure, get: Get, png: Path | None) -> Outcome:
    """The figure's outcome by its rule, and "not tested" while any of its units lacks a
    result: a verdict is never computed on incomplete results. The rule's reading of the
    results present is kept in ``why``, marked as not a verdict."""
    out = FIGURES[fig.name](fig, get, png)
    lost = incomplete(fig, get)
    if lost:
        n = sum(len(s.keys) for s in fig.series)
        names = ", ".join(lost[:6]) + (f" and {len(lost) - 6} more" if len(lost) > 6 else "")
        out.why = (
            f"incomplete: {len(lost)} of {n} units {'has' if len(lost) == 1 else 'have'} no "
            f"current result ({names}; not run "
            "yet, failed or stale), and a verdict waits for all of them. The rule on the "
            f"results present would read '{out.verdict}' (not a verdict): {out.why}"
        )
        out.verdict = UNTESTED
    return out


# -- learning curves (Figs. 3, 5) ---------------------------------------------------------------
def _curves(s: Series, get: Get) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, reward[seed, step]) over the evaluation steps common to the seeds present."""
    runs = [get(k) for k in s.keys]
    runs = [r for r in runs if r is not None and r.get("evals")]
    if not runs:
        return None
    common = sorted(set.intersection(*({e["step"] for e in r["evals"]} for r in runs)))
    if not common:
        return None
    by_step = [{e["step"]: e["avg_reward"] for e in r["evals"]} for r in runs]
    y = np.array([[d[st] for st in common] for d in by_step])
    return np.array(common), y


def _plot_curves(fig: Figure, data: dict[str, tuple], path: Path) -> None:
    near = _near_the_best(data)

    def span(ms: set[str]) -> float:
        return float(np.ptp(np.concatenate([data[m][1].ravel() for m in ms]))) if ms else 0.0

    # a second panel when far-off methods squash two or more close ones into a line
    zoom = len(near) >= 2 and span(set(data)) > 3 * span(near)
    f, axes = plt.subplots(1, 2 if zoom else 1, figsize=(13.0 if zoom else 9.0, 4.2))
    axes = list(axes) if zoom else [axes]
    for ax, shown in zip(axes, [set(data), near], strict=False):
        for k, s in enumerate(fig.series):
            if s.label not in data:
                ax.plot([], [], color=f"C{k}", ls=":", label=f"{s.label} (no results)")
                continue
            if s.label not in shown:
                continue
            steps, y = data[s.label]
            lw = 2.2 if s.label == "MA-CDMP" else 1.2
            ax.plot(steps, y.mean(axis=0), color=f"C{k}", lw=lw, marker="o", ms=3, label=s.label)
            if len(y) > 1:
                ax.fill_between(
                    steps, y.min(axis=0), y.max(axis=0), color=f"C{k}", alpha=0.15, lw=0
                )
        ax.set_xlabel(fig.xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average reward (−delay, ms; higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()  # every method is in the first panel
    axes[-1].legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = f"{fig.name.replace('fig', 'Fig. ')}: {fig.title}"
    if zoom:
        axes[1].set_title("zoomed: the methods ending within 25% of the best", fontsize=9)
        f.suptitle(title, fontsize=9)
    else:
        axes[0].set_title(title, fontsize=9)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _near_the_best(data: dict[str, tuple], within: float = 0.25) -> set[str]:
    """The methods whose final reward (mean over seeds) is within ``within`` of the best one's
    magnitude: the ones a plot scaled to every method would squash together."""
    final = {m: float(y[:, -1].mean()) for m, (_, y) in data.items()}
    if not final:
        return set()
    best = max(final.values())
    return {m for m, v in final.items() if best - v <= within * max(abs(best), 1e-9)}


def _roughness(y: np.ndarray) -> float:
    if y.shape[1] < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(y, axis=1))))


def _roughness_seeds(y: np.ndarray) -> np.ndarray:
    """The roughness of each seed's curve (their mean is ``_roughness``)."""
    if y.shape[1] < 2:
        return np.full(len(y), np.nan)
    return np.abs(np.diff(y, axis=1)).mean(axis=1)


def curves_table(data: dict[str, tuple]) -> list[str]:
    lines = [
        "| method | seeds | evaluations | final reward (mean ± sample std over seeds) | mean "
        "over the curve | roughness (mean ± sample std over seeds) | seed std, mean over "
        "evaluations |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, (steps, y) in data.items():
        lines.append(
            f"| {label} | {len(y)} | {len(steps)} (last at step {steps[-1]}) | "
            f"{_fmt(y[:, -1].mean())} ± {_fmt(y[:, -1].std(ddof=1)) if len(y) > 1 else 'n/a'} | "
            f"{_fmt(y.mean())} | {_fmt(_roughness(y), 3)}"
            + (f" ± {_fmt(_roughness_seeds(y).std(ddof=1), 3)}" if len(y) > 1 else "")
            + " | "
            f"{_fmt(y.std(axis=0, ddof=1).mean()) if len(y) > 1 else 'n/a'} |"
        )
    return lines


def ahead_of_seeds(a: np.ndarray, b: np.ndarray) -> bool:
    """Is method ``a`` ahead of method ``b`` (higher is better), given one value per training
    seed of each? Training seeds are not paired across methods, so ``a`` is ahead when the means
    differ by more than the larger of the two sample standard deviations over the seeds (a
    method with one seed contributes none; with one seed each, the means decide). A difference
    within the seeds' spread is level, not a win."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    margin = max((x.std(ddof=1) if len(x) > 1 else 0.0) for x in (a, b))
    return bool(a.mean() - b.mean() > margin)


def standing(a: np.ndarray, b: np.ndarray) -> str:
    """``a`` against ``b`` by ``ahead_of_seeds``, in one word: ahead, level or behind."""
    return "ahead" if ahead_of_seeds(a, b) else "behind" if ahead_of_seeds(b, a) else "level"


def fig3(fig: Figure, get: Get, png: Path | None) -> Outcome:
    data = {s.label: c for s in fig.series if (c := _curves(s, get)) is not None}
    if png is not None:
        _plot_curves(fig, data, png)
    out = Outcome(UNTESTED, "", curves_table(data), _missing(fig.series, get))
    others = [m for m in data if m != "MA-CDMP"]
    if "MA-CDMP" not in data or not others:
        out.why = "MA-CDMP or every method to compare it with has no learning curve yet."
        return out
    final = {m: float(data[m][1][:, -1].mean()) for m in data}
    rough = {m: _roughness(data[m][1]) for m in data}
    best = max(others, key=lambda m: final[m])
    side = {m: standing(data["MA-CDMP"][1][:, -1], data[m][1][:, -1]) for m in others}
    level = [m for m in others if side[m] == "level"]
    behind = [m for m in others if side[m] == "behind"]
    highest = not level and not behind
    smooth_cmp = [m for m in others if math.isfinite(rough[m])]
    # smoother: a lower roughness by more than the seeds' spread (ahead_of_seeds on -roughness)
    r_me = _roughness_seeds(data["MA-CDMP"][1])
    r_side = {m: standing(-r_me, -_roughness_seeds(data[m][1])) for m in smooth_cmp}
    smoothest = math.isfinite(rough["MA-CDMP"]) and all(r_side[m] == "ahead" for m in smooth_cmp)
    smoothest_other = min(smooth_cmp, key=lambda m: rough[m]) if smooth_cmp else None
    not_smoother = "; ".join(
        f"{word} {', '.join(ms)}"
        for word, side in (("level with", "level"), ("rougher than", "behind"))
        if (ms := [m for m in smooth_cmp if r_side[m] == side])
    )
    parts = [
        f"final reward {_fmt(final['MA-CDMP'])} against the best other, {best}, "
        f"{_fmt(final[best])} ("
        + (
            "highest: ahead of every other"
            if highest
            else "; ".join(
                f"{word} {', '.join(ms)}"
                for word, ms in (("level with", level), ("behind", behind))
                if ms
            )
        )
        + ")",
        f"roughness {_fmt(rough['MA-CDMP'], 3)} against the smoothest other"
        + (f", {smoothest_other}, {_fmt(rough[smoothest_other], 3)}" if smoothest_other else "")
        + (
            " (smoothest: smoother than every other by more than the seeds' spread)"
            if smoothest
            else f" (not the smoothest: {not_smoother or 'no roughness to compare'})"
        ),
    ]
    out.verdict = HOLDS if highest and smoothest else PARTLY if highest or smoothest else NOT
    out.why = "; ".join(parts) + f"; compared with {', '.join(others)}."
    return out


def fig5(fig: Figure, get: Get, png: Path | None) -> Outcome:
    data = {s.label: c for s in fig.series if (c := _curves(s, get)) is not None}
    if png is not None:
        _plot_curves(fig, data, png)
    out = Outcome(UNTESTED, "", curves_table(data), _missing(fig.series, get))
    other = next((s.label for s in fig.series if s.label != "MA-CDMP"), "MADiff")
    if "MA-CDMP" not in data or other not in data:
        out.why = f"needs learning curves of MA-CDMP and {other}; " + (
            "MA-CDMP has none." if "MA-CDMP" not in data else f"{other} has none."
        )
        return out
    a, b = data["MA-CDMP"][1], data[other][1]
    parts, held = [], []
    final_side = standing(a[:, -1], b[:, -1])
    held.append(final_side == "ahead")
    parts.append(
        f"final reward {_fmt(a[:, -1].mean())} against {_fmt(b[:, -1].mean())} "
        f"({'higher' if final_side == 'ahead' else final_side})"
    )
    curve_side = standing(a.mean(axis=1), b.mean(axis=1))
    held.append(curve_side == "ahead")
    parts.append(
        f"mean over the curve {_fmt(a.mean())} against {_fmt(b.mean())} "
        f"({'faster' if curve_side == 'ahead' else curve_side})"
    )
    if len(a) > 1 and len(b) > 1:
        va, vb = a.std(axis=0, ddof=1).mean(), b.std(axis=0, ddof=1).mean()
        # paired over the evaluation steps both curves have: MA-CDMP's seed std is smaller by
        # more than the spread of the difference over those steps (the rule of ``ahead``)
        sa = dict(zip(data["MA-CDMP"][0].tolist(), a.std(axis=0, ddof=1), strict=True))
        sb = dict(zip(data[other][0].tolist(), b.std(axis=0, ddof=1), strict=True))
        both = sorted(set(sa) & set(sb))
        d = np.array([sb[t] - sa[t] for t in both])
        less = bool(len(d) and d.mean() > (d.std(ddof=1) if len(d) > 1 else 0.0))
        more = bool(len(d) and -d.mean() > (d.std(ddof=1) if len(d) > 1 else 0.0))
        held.append(less)
        word = "less variance" if less else "more variance" if more else "level variance"
        parts.append(
            f"seed std {_fmt(va)} against {_fmt(vb)} ({word}: paired over the {len(d)} "
            "evaluation steps both have)"
        )
    else:
        parts.append("variance not computed (fewer than two seeds)")
    out.verdict = HOLDS if all(held) else PARTLY if any(held) else NOT
    out.why = "; ".join(parts) + "."
    return out


# -- QoS bars (Fig. 4) --------------------------------------------------------------------------
FIG4_METRICS = (
    ("throughput_mbps", "throughput", +1),
    ("mean_delay_ms", "delay", -1),
    ("loss_rate", "loss rate", -1),
)


def _row(get: Get, key: str) -> dict[str, Any] | None:
    r = get(key)
    # result files written before the loss-aware delay get it from their per-seed delay and loss
    return with_loss_aware(r["rows"][0]) if r is not None and r.get("rows") else None


def ahead(a: dict[str, Any], b: dict[str, Any], key: str, sign: int = 1) -> bool:
    """Is row ``a`` ahead of row ``b`` on ``key`` (``sign`` +1: higher is better, -1: lower)?

    Both are evaluations on the same held-out networks, so the comparison is paired: ``a`` is
    ahead when the per-seed differences have a mean larger than their (sample) standard
    deviation. A difference within the seeds' noise is level, not a win. Rows without per-seed
    values (older result files) fall back to: the means differ by more than the larger of the
    two standard deviations over the seeds.
    """
    xa, xb = a.get(key + "_seeds"), b.get(key + "_seeds")
    if xa is not None and xb is not None and len(xa) == len(xb) >= 2:
        d = sign * (np.asarray(xa, dtype=float) - np.asarray(xb, dtype=float))
        return bool(d.mean() > d.std(ddof=1))
    margin = max(a.get(key + "_std", 0.0), b.get(key + "_std", 0.0))
    return bool(sign * (a[key] - b[key]) > margin)


def fig4(fig: Figure, get: Get, png: Path | None) -> Outcome:
    rows = []
    for s in fig.series:
        for k in s.keys:
            r = _row(get, k)
            if r is not None:
                rows.append({**r, "policy": s.label, "group": s.group})
    if png is not None and rows:
        plot_qos_bars(
            rows,
            png,
            f"Fig. 4: {fig.title}",
            caption="Bars: mean over the held-out seeds of the average over the four scenarios; "
            "error bars: ± 1 standard deviation over the seeds. Best first (average reward, "
            "ideal RF).",
        )
    elif png is not None:
        _empty_png(png, fig)
    table = [
        "| policy | RF | avg reward | throughput (Mbps) | delay (ms) | loss rate | loss-aware "
        "delay (ms; lost packets at 1 s) | decision ms/frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['policy']} | {r['rf']} | {_fmt(r['avg_reward'])} ± {_fmt(r['avg_reward_std'])}"
            f" | {_fmt(r['throughput_mbps'], 3)} ± {_fmt(r['throughput_mbps_std'], 3)} | "
            f"{_fmt(r['mean_delay_ms'])} ± {_fmt(r['mean_delay_ms_std'])} | "
            f"{_fmt(r['loss_rate'], 4)} ± {_fmt(r['loss_rate_std'], 4)} | "
            f"{_fmt(r[LOSS_AWARE])} ± {_fmt(r[LOSS_AWARE + '_std'])} | "
            f"{_fmt(r.get('act_ms_per_frame', float('nan')), 3)} |"
        )
    out = Outcome(UNTESTED, "", table, _missing(fig.series, get))
    by = {(r["policy"], r["rf"]): r for r in rows}
    learned = [s.label for s in fig.series if s.group == "method" and s.label != "MA-CDMP"]
    allocs = [s.label for s in fig.series if s.group == "allocator"]
    wins, lost, against_alloc, n_cond = 0, [], 0, 0
    aware = []  # the loss-aware delay, beside the verdict
    for rf in ("ideal", "limited"):
        me = by.get(("MA-CDMP", rf))
        others = [by[(m, rf)] for m in learned if (m, rf) in by]
        al = [by[(m, rf)] for m in allocs if (m, rf) in by]
        if me is None or not others:
            continue
        for key, name, sign in FIG4_METRICS:
            n_cond += 1
            level_or_ahead = [r["policy"] for r in others if not ahead(me, r, key, sign)]
            if not level_or_ahead:
                wins += 1
            else:
                lost.append(f"{name} {rf} RF (level or ahead: {', '.join(level_or_ahead)})")
            if al and all(ahead(me, r, key, sign) for r in al):
                against_alloc += 1
        side = {
            r["policy"]: "ahead of"
            if ahead(me, r, LOSS_AWARE, -1)
            else "behind"
            if ahead(r, me, LOSS_AWARE, -1)
            else "level with"
            for r in others + al
        }
        aware.append(
            f"{rf} RF {_fmt(me[LOSS_AWARE])} ms: "
            + "; ".join(
                f"{word} {', '.join(p for p in side if side[p] == word)}"
                for word in ("ahead of", "level with", "behind")
                if word in side.values()
            )
        )
    if n_cond == 0:
        out.why = "MA-CDMP or every learned method to compare it with has no evaluation yet."
        return out
    out.verdict = HOLDS if wins == 6 else PARTLY if wins >= 3 else NOT
    out.why = (
        f"MA-CDMP wins {wins} of {n_cond} conditions against "
        f"{', '.join(m for m in learned if any((m, rf) in by for rf in ('ideal', 'limited')))}"
        + (f"; does not win {'; '.join(lost)}" if lost else "")
        + f". Against the allocators too: it is ahead of all of them in {against_alloc} of "
        f"{n_cond}. Beside the verdict, the loss-aware delay (lost packets counted at "
        f"{LOSS_PENALTY_MS:.0f} ms): " + "; ".join(aware) + "."
    )
    return out


# -- points (Figs. 6-9) -------------------------------------------------------------------------
def _points(s: Series, get: Get) -> list[tuple[Any, dict[str, Any]]]:
    return [(x, r) for x, k in zip(s.x, s.keys, strict=True) if (r := _row(get, k)) is not None]


def _empty_png(path: Path, fig: Figure) -> None:
    f, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{fig.name}: no results yet", ha="center", va="center")
    f.savefig(path, dpi=110)
    plt.close(f)


def _plot_points(fig: Figure, get: Get, path: Path, categorical: bool = False) -> None:
    f, ax = plt.subplots(figsize=(7, 4))
    for k, s in enumerate(fig.series):
        pts = _points(s, get)
        xs = [str(x) for x, _ in pts] if categorical else [x for x, _ in pts]
        ax.errorbar(
            xs,
            [r["avg_reward"] for _, r in pts],
            yerr=[r["avg_reward_std"] for _, r in pts],
            color=f"C{k}",
            marker="o",
            capsize=3,
            label=s.label,
        )
    if fig.kind == "nodes":
        for n in fig.series[0].x:
            if n not in TRAINED_NODE_COUNTS:
                ax.axvspan(n - 0.4, n + 0.4, color="0.9", zorder=0)
        ax.set_xticks(list(fig.series[0].x))
    if fig.name == "fig9":  # the decision time beside the reward
        pts = _points(fig.series[0], get)
        ax2 = ax.twinx()
        ax2.bar(
            [str(x) for x, _ in pts],
            [r.get("act_ms_per_frame", np.nan) for _, r in pts],
            color="0.8",
            alpha=0.5,
            zorder=0,
            label="decision time",
        )
        ax2.set_ylabel("decision time per frame (ms, bars)")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    if fig.name == "fig8" and all(x > 0 for x in fig.series[0].x[1:]):
        xs = list(fig.series[0].x)
        ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0))
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel(fig.xlabel + (" (grey: never seen in training)" if fig.kind == "nodes" else ""))
    ax.set_ylabel("average reward (−delay, ms; higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{fig.name.replace('fig', 'Fig. ')}: {fig.title}", fontsize=9)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def _points_table(fig: Figure, get: Get, xname: str) -> list[str]:
    lines = [
        f"| {xname} | "
        + " | ".join(f"{s.label}: avg reward" for s in fig.series)
        + " | delay (ms) | loss-aware delay (ms) | decision ms/frame |",
        "| --- |" + " --- |" * (len(fig.series) + 3),
    ]
    xs = list(dict.fromkeys(x for s in fig.series for x in s.x))
    for x in xs:
        cells, delay, aware, act = [], [], [], []
        for s in fig.series:
            r = dict(_points(s, get)).get(x)
            cells.append(f"{_fmt(r['avg_reward'])} ± {_fmt(r['avg_reward_std'])}" if r else "—")
            if r:
                delay.append(_fmt(r["mean_delay_ms"]))
                aware.append(_fmt(r[LOSS_AWARE]))
                act.append(_fmt(r.get("act_ms_per_frame", float("nan")), 3))
        lines.append(f"| {x} | " + " | ".join(cells) + f" | {' / '.join(delay) or '—'} | "
                     f"{' / '.join(aware) or '—'} | {' / '.join(act) or '—'} |")  # fmt: skip
    return lines


def fig6(fig: Figure, get: Get, png: Path | None) -> Outcome:
    if png is not None:
        _plot_points(fig, get, png)
    out = Outcome(UNTESTED, "", _points_table(fig, get, "nodes"), _missing(fig.series, get))
    a, b = (dict(_points(s, get)) for s in fig.series[:2])
    both = [n for n in fig.series[0].x if n in a and n in b]
    if not both:
        out.why = "needs MA-CDMP and w/o MF evaluated at the same node count."
        return out
    won = [n for n in both if ahead(a[n], b[n], "avg_reward")]
    behind = [n for n in both if ahead(b[n], a[n], "avg_reward")]
    level = [n for n in both if n not in won and n not in behind]
    total = len(fig.series[0].x)
    out.verdict = HOLDS if len(won) == total else PARTLY if len(won) > total / 2 else NOT
    unseen = [n for n in won if n not in TRAINED_NODE_COUNTS]
    out.why = (
        f"MA-CDMP is ahead at {len(won)} of {total} node counts ({won or 'none'}"
        f"; unseen among them: {unseen or 'none'})"
        + (f", level at {level}" if level else "")
        + (f", behind at {behind}" if behind else "")
        + (f"; {total - len(both)} count(s) not evaluated yet" if len(both) < total else "")
        + "."
    )
    return out


def _sweep(
    fig: Figure, get: Get, png: Path | None, label: str, need: int, what: str
) -> tuple[Outcome, dict, list]:
    """The start of the verdict of one run's sweep (Figs. 7, 8): its plot and table, its points
    and the values evaluated so far; with fewer than ``need`` of them, ``why`` says so."""
    if png is not None:
        _plot_points(fig, get, png)
    out = Outcome(UNTESTED, "", _points_table(fig, get, label), _missing(fig.series, get))
    pts = dict(_points(fig.series[0], get))
    xs = [x for x in fig.series[0].x if x in pts]
    if len(xs) < need:
        out.why = f"needs at least {what} evaluated (has {xs})."
    return out, pts, xs


def fig7(fig: Figure, get: Get, png: Path | None) -> Outcome:
    out, pts, hs = _sweep(fig, get, png, "H", 3, "three horizons")
    if len(hs) < 3:
        return out
    m = {h: pts[h]["avg_reward"] for h in hs}
    sd = {h: pts[h]["avg_reward_std"] for h in hs}
    best = max(hs, key=lambda h: m[h])
    ends = (hs[0], hs[-1])
    if best in ends:
        out.verdict = NOT
        spread = m[best] - min(m.values())
        level = spread <= max(sd.values())
        out.why = (
            f"the best mean reward ({_fmt(m[best])}) is at an end, H = {best}; the means span "
            f"{spread:.2f}, {'within' if level else 'more than'} the largest standard deviation "
            f"over the held-out seeds ({max(sd.values()):.2f})"
            + (", so the horizons are level." if level else ".")
        )
        return out
    # above an end: by more than the larger standard deviation over the held-out seeds
    above = [e for e in ends if m[best] - m[e] > max(sd[best], sd[e])]
    out.verdict = HOLDS if len(above) == 2 else PARTLY if above else NOT
    out.why = (
        f"the best mean reward ({_fmt(m[best])}) is at H = {best}, inside the range; it is "
        + (
            "above both ends"
            if len(above) == 2
            else f"above only H = {above[0]}"
            if above
            else "above neither end (level with both, so no optimum is shown)"
        )
        + f" by more than the larger standard deviation over the held-out seeds (ends: H = "
        f"{ends[0]} {_fmt(m[ends[0]])} ± {_fmt(sd[ends[0]])}, H = {ends[1]} "
        f"{_fmt(m[ends[1]])} ± {_fmt(sd[ends[1]])}; H = {best} ± {_fmt(sd[best])})."
    )
    if len(hs) < len(fig.series[0].x):
        out.why += f" Horizons evaluated so far: {hs}."
    return out


def fig8(fig: Figure, get: Get, png: Path | None) -> Outcome:
    out, pts, zs = _sweep(fig, get, png, "zeta", 2, "two guidance scales")
    if len(zs) < 2:
        return out
    means = np.array([pts[z]["avg_reward"] for z in zs])
    helps = ahead(pts[zs[-1]], pts[zs[0]], "avg_reward")
    # the knob does something where some scale is ahead of or behind the smallest (paired)
    moved = [
        z
        for z in zs[1:]
        if ahead(pts[z], pts[zs[0]], "avg_reward") or ahead(pts[zs[0]], pts[z], "avg_reward")
    ]
    spread = float(means.max() - means.min())
    scale = float(np.mean(np.abs(means)))
    small = spread <= 0.1 * scale
    robust = small and bool(moved)
    out.verdict = HOLDS if helps and robust else PARTLY if helps or robust else NOT
    out.why = (
        f"mean reward {_fmt(means[0])} at zeta = {zs[0]:g} and {_fmt(means[-1])} at zeta = "
        f"{zs[-1]:g} ({'helps' if helps else 'does not help: not ahead'}); spread over the scales "
        f"{_fmt(spread)}, {100 * spread / scale:.1f}% of the mean magnitude ("
        + (
            "robust: within the 10% the rule allows, and the scale does change the reward "
            f"measurably (ahead of or behind zeta = {zs[0]:g} at zeta = "
            f"{', '.join(f'{z:g}' for z in moved)})"
            if robust
            else "not robust: more than the 10% the rule allows"
            if not small
            else "robust does not count: within 10%, but no scale is ahead of or behind zeta = "
            f"{zs[0]:g} on the held-out seeds, so the knob does nothing measurable"
        )
        + ")."
    )
    return out


def fig9(fig: Figure, get: Get, png: Path | None) -> Outcome:
    if png is not None:
        _plot_points(fig, get, png, categorical=True)
    out = Outcome(UNTESTED, "", _points_table(fig, get, "sampler"), _missing(fig.series, get))
    s = fig.series[0]
    pts = dict(_points(s, get))
    ddpm_x = s.x[0]
    dpm = [x for x in s.x[1:] if x in pts]
    if ddpm_x not in pts or not dpm:
        out.why = "needs DDPM and at least one DPM-Solver setting evaluated."
        return out
    measured = [x for x in s.x if x in pts]
    ref = max(measured, key=lambda x: pts[x]["avg_reward"])  # the best sampler measured
    r = pts[ref]["avg_reward"]
    cost, bound = {}, {}
    for x in dpm:
        drop, noise = _paired_drop(pts[ref], pts[x], "avg_reward")
        cost[x] = drop / abs(r)
        bound[x] = (drop + noise) / abs(r)  # the drop by one standard deviation more
    many = [x for x in dpm if int(str(x).split()[-1]) >= 10]
    if all(c <= 0.1 for c in bound.values()):
        out.verdict = HOLDS
    elif many and all(bound[x] <= 0.1 for x in many):
        out.verdict = PARTLY
    else:
        out.verdict = NOT
    out.why = (
        f"the reference is the best sampler measured, {ref} ({_fmt(r)}; {ddpm_x}: "
        f"{_fmt(pts[ddpm_x]['avg_reward'])}); cost of each DPM-Solver setting (its drop below the "
        "reference, relative; with one standard deviation of the paired drop added): "
        + ", ".join(f"{x} {100 * cost[x]:.1f}% ({100 * bound[x]:.1f}%)" for x in dpm)
        + " (the rule allows 10%, counting the standard deviation)"
    )
    better = [str(x) for x in dpm if ahead(pts[x], pts[ddpm_x], "avg_reward")]
    if better:
        out.why += (
            f"; ahead of {ddpm_x} on the same held-out networks (paired): {', '.join(better)}"
        )
    out.why += "."
    return out


def _paired_drop(ref: dict[str, Any], x: dict[str, Any], key: str) -> tuple[float, float]:
    """How far ``x`` is below ``ref`` on ``key`` (higher is better): the mean of the per-seed
    differences and their sample standard deviation (0 for ``ref`` itself); without per-seed
    values, the difference of the means and the larger standard deviation over the seeds."""
    xr, xx = ref.get(key + "_seeds"), x.get(key + "_seeds")
    if xr is not None and xx is not None and len(xr) == len(xx) >= 2:
        d = np.asarray(xr, dtype=float) - np.asarray(xx, dtype=float)
        return float(d.mean()), float(d.std(ddof=1))
    if ref is x:
        return 0.0, 0.0
    noise = max(ref.get(key + "_std", 0.0), x.get(key + "_std", 0.0))
    return float(ref[key] - x[key]), float(noise)


FIGURES: dict[str, Callable[[Figure, Get, Path | None], Outcome]] = {
    "fig3": fig3,
    "fig4": fig4,
    "fig5": fig5,
    "fig6": fig6,
    "fig7": fig7,
    "fig8": fig8,
    "fig9": fig9,
}
