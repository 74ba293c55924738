"""``OUT/report.md``: every figure with its verdict, from the result files alone.

Rebuilt at the end of every ``macdmp reproduce`` and by ``macdmp reproduce --report-only``;
``OUT/verdicts.json`` holds the verdicts in a form a test can compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from macdmp.reproduce.figures import VERDICTS, judge
from macdmp.reproduce.plan import Plan
from macdmp.reproduce.worklist import Store, write_json_atomic


def result_getter(plan: Plan, store: Store, stale: list[str], use_stale: bool = False):
    """Results by key; a stale result (made with other settings) is listed in ``stale``, and
    left out unless ``use_stale``."""
    cache: dict[str, Any] = {}

    def get(key: str) -> dict[str, Any] | None:
        if key not in cache:
            res = store.read(key)
            unit = plan.units.get(key)
            if res is not None and unit is not None and res.get("digest") != unit.digest:
                stale.append(key)
                res = res if use_stale else None
            cache[key] = res
        return cache[key]

    return get


def write_report(
    plan: Plan,
    out: str | Path,
    figures: list[str] | None = None,
    plots: bool = True,
    use_stale: bool = False,
) -> dict[str, dict[str, str]]:
    """Write report.md, figN.png and verdicts.json into ``out``; returns the verdicts.

    ``use_stale``: also use results made with other settings than the current code's (they are
    listed as such); what a report made elsewhere says, from its result files alone."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out)
    stale: list[str] = []
    get = result_getter(plan, store, stale, use_stale)
    chosen = [f for f in plan.figures if figures is None or f.name in figures]
    sc = plan.scale
    outcomes = {}
    for fig in chosen:
        outcomes[fig.name] = judge(fig, get, out / f"{fig.name}.png" if plots else None)
    verdicts = {k: {"verdict": o.verdict, "why": o.why} for k, o in outcomes.items()}
    write_json_atomic(out / "verdicts.json", {"scale": sc.name, "verdicts": verdicts})

    lines = [
        f"# Reproduction of the paper's experiments: {sc.name} scale",
        "",
        f"Scale `{sc.name}`: {sc.describe}. Made by `macdmp reproduce --scale {sc.name}` and "
        f"rebuilt from the result files in `results/` by `macdmp reproduce --scale {sc.name} "
        "--out DIR --report-only`; docs/guide/reproducing.md explains the work list and the rules.",
        "",
        "Verdicts: **holds**, **holds partly**, **does not hold** (by the rule written beside "
        "each claim), or **not tested** until every unit of the figure has a current result "
        "(a verdict is never computed on incomplete results; the rule's reading of the results "
        "present is given beside it).",
        "",
        "| figure | the paper's claim | verdict | missing |",
        "| --- | --- | --- | --- |",
    ]
    for fig in chosen:
        o = outcomes[fig.name]
        miss = f"{len(o.missing)} series incomplete" if o.missing else "—"
        lines.append(f"| [{fig.name}](#{fig.name}) | {fig.claim} | **{o.verdict}** | {miss} |")
    lines.append("")
    for fig in chosen:
        o = outcomes[fig.name]
        lines += [
            f"## {fig.name}",
            "",
            f"**{fig.name.replace('fig', 'Fig. ')}: {fig.title}.**",
            "",
            f"![{fig.name}]({fig.name}.png)",
            "",
            f"- Claim: {fig.claim}",
            f"- Rule: {fig.rule}",
            f"- Verdict: **{o.verdict}**: {o.why}",
            f"- Settings: {fig.notes}",
        ]
        if o.missing:
            lines.append("- Missing: " + "; ".join(o.missing))
        lines += ["", *o.table, ""]

    unavailable = sorted(
        {s.missing for f in chosen for s in f.series if s.missing}  # not registered
    )
    lines += work_list_lines(plan, store, plan.needed(figures), unavailable, stale, use_stale)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    assert all(v["verdict"] in VERDICTS for v in verdicts.values())
    return verdicts


def work_list_lines(
    plan: Plan,
    store: Store,
    keys: list[str],
    unavailable: list[str],
    stale: list[str],
    use_stale: bool = False,
) -> list[str]:
    """The report's section on the work list: the state of the units ``keys``, their wall and
    CPU time by kind, the machines, what is not available, failed or stale."""
    counts = {"done": 0, "stale": 0, "pending": 0}
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    machines: set[str] = set()
    for k in keys:
        st = store.status(plan.units[k])
        counts[st] += 1
        if st == "done":
            res = store.read(k) or {}
            kind = plan.units[k].kind
            # a training run's own clock covers every segment of it (a resumed run's wall_s
            # is its last process's); runs packed together share it
            spent = res.get("train_wall_s", res.get("wall_s", 0.0))
            wall[kind] = wall.get(kind, 0.0) + float(spent) / max(1, int(res.get("packed_with", 1)))
            cpu[kind] = cpu.get(kind, 0.0) + float(res.get("cpu_s", 0.0))
            if res.get("machine"):
                machines.add(res["machine"])
    failures = {k: v for k, v in store.failures().items() if k in plan.units}
    lines = [
        "## The work list",
        "",
        f"{len(keys)} units: {counts['done']} done, {counts['pending']} not run yet, "
        f"{counts['stale']} stale (made with other settings; rerun to redo them), "
        f"{len(failures)} failed at their last attempt.",
        "Wall time of the units done, by kind (seconds; a training run over all its segments, runs "
        "packed together sharing theirs): "
        + (", ".join(f"{k} {v:.0f}" for k, v in sorted(wall.items())) or "none")
        + "; CPU time of the process running them: "
        + (", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items())) or "none")
        + ".",
    ]
    if machines:
        lines.append("Machines: " + "; ".join(sorted(machines)) + ".")
    if unavailable:
        lines += ["", "Not available: " + "; ".join(unavailable) + "."]
    if failures:
        lines += ["", "Failed at their last attempt:", ""]
        lines += [f"- `{k}`: {v}" for k, v in failures.items()]
    if stale:
        what = "used as they are (--use-stale)" if use_stale else "left out"
        lines += [
            "",
            f"Stale results (made with other settings than this code's), {what}: "
            + ", ".join(f"`{k}`" for k in sorted(set(stale))),
        ]
    return lines
