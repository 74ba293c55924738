"""Mean ± sample sd over the three runs of each correction in `post.py` files (5d's script).

    python summary.py post-val-pbc-mobile.json post-test-pbc-mobile.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def main(paths: list[str]) -> None:
    print("| file | correction | ideal RF | limited RF | sum | idle RBs per full frame |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in paths:
        with open(path) as fh:
            rows = json.load(fh)["rows"]
        by = defaultdict(list)
        for r in rows:
            name = "maxweight" if r["policy"] == "maxweight" else r["correction"]
            by[name].append((r["ideal"], r["limited"], r["idle_rbs"]))
        for name, vals in by.items():
            a = np.array(vals)
            sd = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(3)
            m = a.mean(axis=0)
            print(
                f"| {path} | {name} | {m[0]:.1f} ± {sd[0]:.1f} | {m[1]:.1f} ± {sd[1]:.1f} "
                f"| {m[0] + m[1]:.2f} | {m[2]:.2f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
