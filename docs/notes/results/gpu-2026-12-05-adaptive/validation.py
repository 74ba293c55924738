"""The validation networks' rows of `boost` for the three `top-steer` runs, averaged.

Each post-val-top-sS.txt is the table `post.py --validation` printed for run S (its selected
checkpoint) before the call's timeout stopped it (the x2 rows were not reached, so no JSON was
written). Per correction: the mean over the three runs of the loss-aware delay under ideal and
limited RF, their sum (the rule that chooses the factor: the lowest sum), and the idle RBs.

    python validation.py   # from this folder
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
acc = defaultdict(list)
for f in sorted(HERE.glob("post-val-top-s*.txt")):
    for line in f.read_text().splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) != 7 or not cols[0].startswith("/root"):
            continue
        acc[cols[1]].append((float(cols[2]), float(cols[4]), float(cols[6])))
print("| correction | runs | ideal RF | limited RF | sum | idle RBs per full frame |")
print("| --- | --- | --- | --- | --- | --- |")
for name, vals in acc.items():
    ideal, limited, idle = np.mean(vals, axis=0)
    cols = f"{ideal:.1f} | {limited:.1f} | {ideal + limited:.1f} | {idle:.2f}"
    print(f"| {name} | {len(vals)} | {cols} |")
