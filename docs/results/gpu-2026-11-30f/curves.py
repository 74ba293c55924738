"""Each MA-CDMP run's in-loop learning curve: its peak (and the step) and its last evaluation.

Run from the repository root: python docs/results/gpu-2026-11-30f/curves.py
"""

import json
from pathlib import Path

R = Path("docs/reproduction/paper/results")
for f in sorted(R.glob("train-ma-cdmp-*.json")) + sorted(R.glob("train-madiff-*.json")):
    ev = json.loads(f.read_text())["evals"]
    peak = max(ev, key=lambda e: e["avg_reward"])
    mean = sum(e["avg_reward"] for e in ev) / len(ev)
    print(
        f"{f.stem}: peak {peak['avg_reward']:.2f} at step {peak['step']}, "
        f"last {ev[-1]['avg_reward']:.2f} at step {ev[-1]['step']}, mean {mean:.2f}"
    )
