"""Plots: the topology of a network, per-frame delay traces and QoS bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def plot_delay_traces(traces: dict[str, np.ndarray], path: str | Path, title: str = "") -> None:
    """Per-frame mean delay over an episode, one line per method."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, trace in traces.items():
        ax.plot(trace, lw=0.8, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("mean delay of delivered packets (ms)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_qos_bars(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Bars of reward, throughput, delay and loss by method (mean +- std)."""
    metrics = [
        ("avg_reward", "avg reward"),
        ("throughput_mbps", "throughput (Mbps)"),
        ("mean_delay_ms", "delay (ms)"),
        ("loss_rate", "loss rate"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    names = [r["policy"] + ("" if r.get("rf", "ideal") == "ideal" else " (lim)") for r in rows]
    for ax, (key, label) in zip(axes, metrics, strict=True):
        vals = [r[key] for r in rows]
        errs = [r.get(key + "_std", 0.0) for r in rows]
        ax.bar(range(len(rows)), vals, yerr=errs, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_title(label)
        if key == "mean_delay_ms":
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
