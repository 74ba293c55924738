"""The section's table rows from `macdmp evaluate --json` files of three training seeds:
loss-aware delay, mean ± sample standard deviation over the seeds, for the selected (best)
and last checkpoints, ideal and limited RF, and the packets lost (ideal, selected).

    python table.py NAME=FILE.json [...]     (rows labelled NAME-sK-best / NAME-sK-last)
"""

import json
import sys

import numpy as np

for item in sys.argv[1:]:
    name, _, path = item.partition("=")
    rows = json.load(open(path))["rows"]

    def cell(which, rf, key="loss_aware_delay_ms", rows=rows, name=name):
        v = [r[key] for r in rows if r["rf"] == rf and r["policy"].endswith(which)]
        return np.mean(v), np.std(v, ddof=1)

    cells = [
        cell(w, rf)
        for w, rf in (
            ("best", "ideal"),
            ("last", "ideal"),
            ("best", "limited"),
            ("last", "limited"),
        )
    ]
    lost = cell("best", "ideal", "loss_rate")[0]
    print(
        f"| {name} | "
        + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in cells)
        + f" | {100 * lost:.2f}% |"
    )
