"""The four tests of one set of `top-steer` checkpoints on `load100`, side by side.

Each rep*-eval file is one test of the same three training seeds' checkpoints (selected and
last, and with `boost` where tested) on the same 3 held-out networks x 4 scenarios x 1,000
frames, in a separate process on the same GPU. Per row: the mean over the three training seeds
of the loss-aware delay (ms) and of the loss, under ideal and limited RF.

    python repeats.py   # from this folder; then the options paired with the same test
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
files = sorted(HERE.glob("rep*-eval-*.json"))
cells: dict = defaultdict(dict)  # (row, rf) -> {rep: (delay, loss)}
for f in files:
    rep = f.name.split("-")[0]
    acc = defaultdict(list)
    for r in json.loads(f.read_text())["rows"]:
        row = re.sub(r" seed \d+", "", r["policy"])
        acc[(row, r["rf"])].append((r["loss_aware_delay_ms"], r["loss_rate"]))
    for key, vals in acc.items():
        cells[key][rep] = tuple(np.mean(vals, axis=0))
reps = [f.name.split("-")[0] for f in files]
print("| row | RF | " + " | ".join(reps) + " | mean of the tests |")
print("| --- | --- |" + " --- |" * (len(reps) + 1))
for (row, rf), by in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    got = [by.get(r) for r in reps]
    txt = [f"{v[0]:.1f} ({100 * v[1]:.2f}%)" if v else "" for v in got]
    mean = np.mean([v[0] for v in got if v])
    print(f"| {row} | {rf} | " + " | ".join(txt) + f" | {mean:.1f} |")

# paired by test: each option's row less the same test's as-trained row (selected checkpoints)
print()
print("| option | RF | tests | less the same test's as-trained row: mean (range) |")
print("| --- | --- | --- | --- |")
for (row, rf), by in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    if "+" not in row:
        continue
    base = cells[("top-steer [best]", rf)]
    diffs = [by[r][0] - base[r][0] for r in reps if r in by]
    spread = f"{min(diffs):+.1f} to {max(diffs):+.1f}"
    print(f"| {row} | {rf} | {len(diffs)} | {np.mean(diffs):+.1f} ({spread}) |")
