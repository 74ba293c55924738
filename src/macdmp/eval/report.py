"""Merge `macdmp evaluate --json` files into one markdown report with tables and plots.

    macdmp report --json a.json b.json ... --losses RUN/losses.jsonl ... --out DIR

Writes DIR/report.md (one QoS table per RF condition, rows sorted by average reward) and
DIR/qos.png, plus DIR/training.png when loss logs are given. Runs of one method that differ
only by their training seed (policy labels equal but for " seed N"; a label without it is seed
0) also get a table across training seeds: the mean and standard deviation, over the seeds, of
each run's mean over the held-out network seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from macdmp.common.outputs import read_json, read_jsonl
from macdmp.eval.plots import plot_qos_bars, plt
from macdmp.policies.episodes import TABLE_METRICS as METRICS
from macdmp.policies.episodes import with_loss_aware

HEADERS = {
    "avg_reward": "avg reward",
    "throughput_mbps": "throughput (Mbps)",
    "mean_delay_ms": "delay (ms)",
    "loss_rate": "loss rate",
    "loss_aware_delay_ms": "loss-aware delay (ms; lost packets at 1 s)",
}


def load_results(paths: list[str | Path]) -> list[dict]:
    """Rows of every file, each tagged with its episode length; a policy seen twice is kept once
    (the longest episodes win)."""
    rows: dict[tuple[str, str], dict] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--json: {p} does not exist")
        data = read_json(p, "--json")  # a damaged file is named with the line
        try:
            file_rows = data["rows"]
        except (KeyError, TypeError):
            raise ValueError(f"--json: {p} is not a `macdmp evaluate --json` file") from None
        for row in file_rows:
            # files written before the loss-aware delay get it from their delay and loss
            row = dict(with_loss_aware(row), frames=data.get("frames"), source=p.name)
            key = (row["policy"], row["rf"])
            if key not in rows or (row["frames"] or 0) > (rows[key]["frames"] or 0):
                rows[key] = row
    return list(rows.values())


def markdown_tables(rows: list[dict]) -> str:
    rows = [with_loss_aware(r) for r in rows]
    out = []
    for rf in dict.fromkeys(r["rf"] for r in rows):
        mine = sorted((r for r in rows if r["rf"] == rf), key=lambda r: -r["avg_reward"])
        out += [
            f"#### {rf} RF",
            "",
            "| policy | "
            + " | ".join(HEADERS[m] for m in METRICS)
            + " | frames | decision ms/frame |",
            "| --- |" + " --- |" * (len(METRICS) + 2),
        ]
        for r in mine:
            cells = []
            for m in METRICS:
                d = 4 if m == "loss_rate" else 2
                std = r.get(m + "_std", float("nan"))
                cells.append(f"{r[m]:.{d}f}" + (f" ± {std:.{d}f}" if np.isfinite(std) else ""))
            out.append(
                f"| {r['policy']} | "
                + " | ".join(cells)
                + f" | {r['frames']} | {r.get('act_ms_per_frame', float('nan')):.3g} |"
            )
        out.append("")
    return "\n".join(out)


SEED_TAG = re.compile(r" seed (\d+)\b")


def training_seed_table(rows: list[dict]) -> str:
    """Markdown: each method with two or more training seeds (see the module docstring), per RF
    condition, mean +- std over its seeds of every metric; "" when there is none."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for r in map(with_loss_aware, rows):
        m = SEED_TAG.search(r["policy"])
        method = SEED_TAG.sub("", r["policy"])
        groups.setdefault((method, r["rf"]), {})[int(m.group(1)) if m else 0] = r
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return ""
    out = [
        "#### across training seeds",
        "",
        "Mean ± standard deviation over the training seeds of each run's mean over the held-out "
        "network seeds.",
        "",
        "| method | RF | training seeds | " + " | ".join(HEADERS[m] for m in METRICS) + " |",
        "| --- | --- | --- |" + " --- |" * len(METRICS),
    ]
    order = sorted(
        groups, key=lambda k: (k[1], -np.mean([r["avg_reward"] for r in groups[k].values()]))
    )
    for method, rf in order:
        runs = groups[(method, rf)]
        cells = []
        for m in METRICS:
            v = np.array([runs[s][m] for s in sorted(runs)])
            d = 4 if m == "loss_rate" else 2
            cells.append(f"{v.mean():.{d}f} ± {v.std(ddof=1):.{d}f}")
        seeds = ", ".join(str(s) for s in sorted(runs))
        out.append(f"| {method} | {rf} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(out + [""])


def plot_training(loss_files: list[str | Path], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for f in loss_files:
        recs = read_jsonl(f, "--losses")  # a damaged line is named with its file
        steps = np.array([r["step"] for r in recs])
        label = Path(f).stem.removeprefix("losses-")
        for ax, key in zip(axes, ("diff", "cls", "inv"), strict=True):
            ax.plot(steps, [r[key] for r in recs], label=label, lw=1)
            ax.set_title(
                {"diff": "noise MSE", "cls": "return MSE", "inv": "inverse dynamics MSE"}[key]
                + " (normalised)"
            )
            ax.set_xlabel("training step")
            ax.set_ylabel("MSE (normalised, no unit)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(json_files, loss_files, out_dir: str | Path, title: str = "Results") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_results(json_files)
    text = [f"### {title}", "", markdown_tables(rows)]
    seeds = training_seed_table(rows)
    if seeds:
        text += [seeds]
    plot_qos_bars(
        rows,
        out / "qos.png",
        title,
        caption="Bars: mean over the held-out network seeds of the average over the scenarios; "
        "error bars: ± 1 standard deviation over the seeds. Methods best first (average "
        "reward, first RF condition).",
    )
    text.append("![QoS by method](qos.png)")
    if loss_files:
        plot_training(loss_files, out / "training.png")
        text += ["", "![training losses](training.png)"]
    report = out / "report.md"
    report.write_text("\n".join(text) + "\n")
    return report
