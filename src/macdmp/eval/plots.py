"""Plots: the topology of a network, per-frame delay traces and QoS bars.

Every figure of the package is drawn off-screen (the Agg backend, set here); the modules that
draw import ``plt`` from here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from macdmp.common.outputs import disk_errors_named  # noqa: E402
from macdmp.policies.allocators import REFERENCES  # noqa: E402
from macdmp.policies.episodes import LOSS_AWARE, with_loss_aware  # noqa: E402
from macdmp.sim.config import ScenarioConfig  # noqa: E402
from macdmp.sim.network import Network  # noqa: E402


def plot_topology(net: Network, cfg: ScenarioConfig, path: str | Path) -> None:
    """Nodes by rate class, 1-hop links, and routes drawn by the traffic they carry."""
    fig, ax = plt.subplots(figsize=(6, 6))
    pos = net.positions_m / 1000.0
    n = net.n_nodes
    for i in range(n):
        for j in range(i + 1, n):
            if net.adjacency[i, j]:
                ax.plot(*pos[[i, j]].T, color="0.85", lw=1, zorder=1)
    flow = net.link_ppf + net.link_ppf.T
    peak = flow.max() if flow.max() > 0 else 1.0
    for i in range(n):
        for j in range(i + 1, n):
            if flow[i, j] > 0:
                ax.plot(
                    *pos[[i, j]].T,
                    color="tab:blue",
                    lw=0.5 + 4 * flow[i, j] / peak,
                    alpha=0.6,
                    zorder=2,
                )
    high = net.is_high
    ax.scatter(*pos[high].T, s=160, c="tab:red", label="high-rate", zorder=3, edgecolor="k")
    ax.scatter(*pos[~high].T, s=110, c="tab:green", label="low-rate", zorder=3, edgecolor="k")
    for i in range(n):
        ax.annotate(str(i), pos[i], ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(0, cfg.area_m / 1000)
    ax.set_ylim(0, cfg.area_m / 1000)
    ax.set_aspect("equal")
    ax.set_xlabel("x (km)")
    ax.set_ylabel("y (km)")
    ax.set_title(f"{cfg.name}: links (grey), routes by load (blue)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RF_COLOURS = {"ideal": "tab:blue", "limited": "tab:orange"}
QOS_METRICS = (
    # key, axis label, scale applied to the value, log axis
    ("avg_reward", "average reward (ms; −delay, higher is better)", 1.0, False),
    ("throughput_mbps", "throughput (Mbps)", 1.0, False),
    ("mean_delay_ms", "mean delay (ms, log scale)", 1.0, True),
    ("loss_rate", "packet loss (%)", 100.0, False),
    ("loss_aware_delay_ms", "loss-aware delay (ms, log; lost packets at 1 s)", 1.0, True),
)


def _method_order(rows: list[dict]) -> list[str]:
    """Methods best first: by average reward under the first RF condition listed."""
    first_rf = rows[0].get("rf", "ideal")
    score = {r["policy"]: r["avg_reward"] for r in rows if r.get("rf", "ideal") == first_rf}
    names = list(dict.fromkeys(r["policy"] for r in rows))
    return sorted(names, key=lambda m: -score.get(m, -np.inf))


def plot_qos_bars(rows: list[dict], path: str | Path, title: str = "", caption: str = "") -> None:
    """Grouped horizontal bars of the QoS metrics (the loss-aware delay the fifth): one group per
    method (best first), one colour per RF condition, error bars of one standard deviation."""
    rows = [with_loss_aware(r) for r in rows]  # result files written before the metric
    methods = _method_order(rows)
    rfs = list(dict.fromkeys(r.get("rf", "ideal") for r in rows))
    by_key = {(r["policy"], r.get("rf", "ideal")): r for r in rows}
    height = 0.8 / len(rfs)
    fig, axes = plt.subplots(
        1, len(QOS_METRICS), figsize=(18, 1.6 + 0.42 * len(methods)), sharey=True
    )
    y = np.arange(len(methods))
    for ax, (key, label, scale, log) in zip(axes, QOS_METRICS, strict=True):
        for k, rf in enumerate(rfs):
            vals = np.array([by_key.get((m, rf), {}).get(key, np.nan) for m in methods]) * scale
            errs = np.array([by_key.get((m, rf), {}).get(key + "_std", 0.0) for m in methods])
            errs = np.nan_to_num(errs.astype(float))  # a row without a spread draws none
            pos = y - 0.4 + height * (k + 0.5)
            ax.barh(
                pos,
                vals,
                height=height * 0.9,
                xerr=errs * scale,
                color=RF_COLOURS.get(rf, f"C{k + 2}"),
                label=f"{rf} RF",
                error_kw={"elinewidth": 0.8, "capsize": 1.5},
            )
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        if log:
            ax.set_xscale("log")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(methods, fontsize=8)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(rfs), fontsize=9, frameon=False)
    fig.suptitle(title, x=0.01, ha="left")
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.06 if caption else 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling median that ignores NaN (frames where nothing was delivered)."""
    if window <= 1 or x.shape[-1] < window:
        return x
    pad = window // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, window - 1 - pad)], mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        return np.nanmedian(windows, axis=-1)


def plot_delay_panels(
    frame_delay_ms: dict[str, dict[str, list]], path: str | Path, n_seeds: int | None = None
) -> None:
    """Per-frame delay over the episode, one panel per scenario and RF condition (small
    multiples): per method, the median over seeds of a rolling median, with the seeds' range
    as a band."""
    cases = list(frame_delay_ms)
    scenarios = list(dict.fromkeys(c.split("/")[0] for c in cases))
    rfs = list(dict.fromkeys(c.split("/")[-1] for c in cases))
    methods = list(dict.fromkeys(m for c in cases for m in frame_delay_ms[c]))
    colours = {m: f"C{k % 10}" for k, m in enumerate(methods)}
    styles = {m: "-" if k < 10 else "--" for k, m in enumerate(methods)}
    fig, axes = plt.subplots(
        len(rfs),
        len(scenarios),
        figsize=(3.4 * len(scenarios) + 2.6, 2.6 * len(rfs) + 0.9),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    frames = 1
    for case in cases:
        scen, rf = case.split("/")[0], case.split("/")[-1]
        ax = axes[rfs.index(rf), scenarios.index(scen)]
        for m, seeds in frame_delay_ms[case].items():
            arr = np.array([[np.nan if v is None else v for v in s] for s in seeds], dtype=float)
            frames = max(frames, arr.shape[-1])
            smooth = _rolling_median(arr, max(1, arr.shape[-1] // 25))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mid = np.nanmedian(smooth, axis=0)
                lo, hi = np.nanmin(smooth, axis=0), np.nanmax(smooth, axis=0)
            t = np.arange(arr.shape[-1])
            ax.fill_between(t, lo, hi, color=colours[m], alpha=0.12, lw=0)
            learned = m.startswith("MA-CDMP")  # the learned methods stand out
            ax.plot(t, mid, color=colours[m], ls=styles[m], lw=2.0 if learned else 1.0, label=m)
        ax.set_title(f"{scen}, {rf} RF", fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    for ax in axes[-1]:
        ax.set_xlabel("frame (5 ms each)")
    for ax in axes[:, 0]:
        ax.set_ylabel("delay (ms)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    seeds = f"{n_seeds} held-out seeds" if n_seeds else "the held-out seeds"
    fig.suptitle(
        "Mean delay of the packets delivered in each frame: line = median over "
        f"{seeds} of a {max(1, frames // 25)}-frame rolling median; band = range over the seeds",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 0.85, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_family_map(rows: list[dict], path: str | Path) -> None:
    """Bars of the loss-aware delay of every policy, one panel per family, one bar per RF."""
    fams = list(dict.fromkeys(r["family"] for r in rows))
    rfs = list(dict.fromkeys(r["rf"] for r in rows))
    pols = list(dict.fromkeys(r["policy"] for r in rows))
    cols = min(len(fams), 4)
    nrows = -(-len(fams) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    width = 0.8 / len(rfs)
    for ax, fam in zip(axes.flat, fams, strict=False):
        for k, rf in enumerate(rfs):
            vals = [
                next(
                    r[LOSS_AWARE]
                    for r in rows
                    if (r["family"], r["rf"], r["policy"]) == (fam, rf, p)
                )
                for p in pols
            ]
            ax.bar(np.arange(len(pols)) + k * width, vals, width, label=f"{rf} RF")
        ax.set_yscale("log")
        ax.set_title(fam)
        ax.set_xticks(np.arange(len(pols)) + width * (len(rfs) - 1) / 2)
        ax.set_xticklabels(
            [p + (" *" if p in REFERENCES else "") for p in pols], rotation=60, fontsize=7
        )
        ax.set_ylabel("loss-aware delay (ms)")
    for ax in list(axes.flat)[len(fams) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Every allocator on every family (* reference: network-wide knowledge)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_result(result: dict, folder: str | Path) -> None:
    """``qos.png`` and ``delay.png`` of an ``evaluate`` result in ``folder`` (made)."""
    folder = Path(folder)
    with disk_errors_named(folder):
        folder.mkdir(parents=True, exist_ok=True)
        n_seeds, n_scen = len(result["seeds"]), len(result["scenarios"])
        plot_qos_bars(
            result["rows"],
            folder / "qos.png",
            f"QoS on held-out networks ({n_scen} scenarios, {result['frames']}-frame episodes)",
            caption=f"Bars: mean over {n_seeds} held-out network seeds of the average over the "
            f"{n_scen} scenarios; error bars: ± 1 standard deviation over the seeds. Methods "
            "best first (average reward, ideal RF).",
        )
        plot_delay_panels(result["frame_delay_ms"], folder / "delay.png", n_seeds)
