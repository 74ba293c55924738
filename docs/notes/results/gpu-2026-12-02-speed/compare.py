"""Seed spread against the effect of a switch (issue 31, item 1), from the run folders here.

    python docs/results/gpu-2026-12-02-speed/compare.py [DIR]

Loss curves: at every logged step (every 100 steps), the spread between the three float32 seeds
(max - min of the logged loss) against the difference between a tf32 run and the float32 run of
the same seed; and the tail loss (mean of the last 1,000 steps). Final delay: the in-loop
evaluation at the last step (the same held-out networks for every run).
"""

from __future__ import annotations

import json
import statistics as st
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent) / "runs"
SEEDS, KEYS = (0, 1, 2), ("loss", "inv", "diff", "cls")


def read(name: str, file: str) -> list[dict]:
    return [json.loads(ln) for ln in (root / name / file).read_text().splitlines() if ln.strip()]


def tail(recs: list[dict], key: str, last: int = 1000) -> float:
    end = recs[-1]["step"]
    return st.mean(r[key] for r in recs if r["step"] > end - last)


def main() -> None:
    fp = {s: read(f"fp32-s{s}", "losses.jsonl") for s in SEEDS}
    sw = {s: read(f"tf32-s{s}", "losses.jsonl") for s in SEEDS}
    print("loss curves, 60 logged points per run (every 100 steps):")
    for key in KEYS:
        spread = [max(fp[s][i][key] for s in SEEDS) - min(fp[s][i][key] for s in SEEDS)
                  for i in range(len(fp[0]))]  # fmt: skip
        diff = [abs(sw[s][i][key] - fp[s][i][key]) for s in SEEDS for i in range(len(fp[0]))]
        inside = sum(
            min(fp[t][i][key] for t in SEEDS) <= st.mean(sw[t][i][key] for t in SEEDS)
            <= max(fp[t][i][key] for t in SEEDS)
            for i in range(len(fp[0]))
        )  # fmt: skip
        print(f"  {key:5s} seed spread (max-min of fp32) median {st.median(spread):.4f}; "
              f"|tf32 - fp32|, same seed: median {st.median(diff):.4f}, max {max(diff):.4f}; "
              f"tf32 seed mean inside the fp32 range at {inside}/{len(spread)} points")  # fmt: skip
    print("tail loss (mean of the last 1,000 steps):")
    for name, runs in (("fp32", fp), ("tf32", sw)):
        vals = [tail(runs[s], "loss") for s in SEEDS]
        print(f"  {name}: " + ", ".join(f"{v:.4f}" for v in vals)
              + f"; mean {st.mean(vals):.4f}, std {st.stdev(vals):.4f}")  # fmt: skip
    print("in-loop evaluation at the last step, mean delay (ms):")
    d = {}
    for name in ("fp32", "tf32"):
        d[name] = [read(f"{name}-s{s}", "evals.jsonl")[-1]["mean_delay_ms"] for s in SEEDS]
        print(f"  {name}: " + ", ".join(f"{v:.2f}" for v in d[name])
              + f"; mean {st.mean(d[name]):.2f}, std {st.stdev(d[name]):.2f}, "
              f"range {max(d[name]) - min(d[name]):.2f}")  # fmt: skip
    pair = [b - a for a, b in zip(d["fp32"], d["tf32"], strict=True)]
    print("  tf32 - fp32, same seed: " + ", ".join(f"{v:+.2f}" for v in pair)
          + f"; mean {st.mean(pair):+.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
