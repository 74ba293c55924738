"""Learning curves of stacked runs against the same runs alone (issue 31, item 2).

    PYTHONPATH=src python docs/notes/results/gpu-2026-12-02-stacked/curves.py \
        [--steps 2000] [--runs 8] [--alone 0,7] [--log-every 100] [--json FILE]

Trains seeds 0..runs-1 of the paper preset (synthetic windows of its shapes) as one stacked
model, captured, then the seeds of --alone each alone, captured, and prints per logged step the
seed spread of the stacked runs' loss (max - min) and each lone run's |alone - stacked| loss.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from macdmp.methods import Trainer, read_losses
from macdmp.methods.stacked import train_stacked
from macdmp.planner import make_config
from macdmp.planner.synthetic import SyntheticWindows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--alone", default="0,7")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cfg = make_config("paper", max_steps=a.steps, log_every=a.log_every, ckpt_every=a.steps)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    alone = [int(s) for s in a.alone.split(",")]
    root = Path(tempfile.mkdtemp())
    trs = [Trainer("ma-cdmp", cfg.replace(seed=k), data, root / f"st{k}") for k in range(a.runs)]
    t0 = time.perf_counter()
    train_stacked(trs, progress=False)
    stacked_s = time.perf_counter() - t0
    for tr in trs:
        tr.close()
    alone_s = []
    for k in alone:
        tr = Trainer("ma-cdmp", cfg.replace(seed=k), data, root / f"alone{k}")
        t0 = time.perf_counter()
        tr.run(progress=False)
        alone_s.append(time.perf_counter() - t0)
        tr.close()
    st = [read_losses(root / f"st{k}") for k in range(a.runs)]
    lone = {k: read_losses(root / f"alone{k}") for k in alone}
    times = ", ".join(f"seed {k} {s:.1f} s" for k, s in zip(alone, alone_s, strict=True))
    print(f"{a.runs} runs stacked, {a.steps} steps: {stacked_s:.1f} s; alone: {times}")
    print()
    head = " | ".join(f"seed {k}: alone, stacked, diff" for k in alone)
    print(f"| step | stacked seeds: min, max, spread | {head} |")
    print("|---|---|" + "---|" * len(alone))
    rows, ratios = [], []
    for i, rec in enumerate(st[0]):
        losses = [s[i]["loss"] for s in st]
        spread = max(losses) - min(losses)
        cells, row = [], {"step": rec["step"], "spread": spread, "min": min(losses),
                          "max": max(losses)}  # fmt: skip
        for k in alone:
            la, ls = lone[k][i]["loss"], st[k][i]["loss"]
            assert lone[k][i]["step"] == rec["step"]
            cells.append(f"{la:.4f}, {ls:.4f}, {abs(la - ls):.2e}")
            row[f"alone{k}"], row[f"stacked{k}"] = la, ls
            ratios.append(abs(la - ls) / spread if spread else 0.0)
        rows.append(row)
        print(f"| {rec['step']} | {min(losses):.4f}, {max(losses):.4f}, {spread:.4f} | "
              + " | ".join(cells) + " |")  # fmt: skip
    print(f"\n|alone - stacked| / seed spread: median {sorted(ratios)[len(ratios) // 2]:.3f}, "
          f"max {max(ratios):.3f}")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps({"steps": a.steps, "runs": a.runs,
                                            "stacked_s": stacked_s, "alone_s": alone_s,
                                            "rows": rows}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
