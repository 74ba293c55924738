"""CPU time per training step of this trainer against the previous one (no regression check).

    git worktree add /tmp/base 5a8fc1d          # the last commit with the previous trainer
    python benchmarks/train_cpu_ab.py --old /tmp/base [--rounds 8] [--steps 60]

Runs the `demo` preset with one torch thread, alternately under the previous trainer
(`macdmp.planner.Trainer` of the old checkout) and this one, each in a fresh process, and
prints the process CPU time per step of every round and the medians. CPU time, not wall time,
because a shared 2-core machine makes wall time swing by 2x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

OLD = """
import tempfile, time
from macdmp.planner import make_config, Trainer
from macdmp.planner.synthetic import SyntheticWindows
cfg = make_config('demo')
tr = Trainer(cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tempfile.mkdtemp())
tr.models.train()
for _ in range(10): tr.train_step()
t = time.process_time()
for _ in range(STEPS): tr.train_step()
print((time.process_time() - t) / STEPS * 1000)
"""
NEW = """
import tempfile, time
from macdmp.methods import Trainer
from macdmp.planner import make_config
from macdmp.planner.synthetic import SyntheticWindows
cfg = make_config('demo', max_steps=10**6)
tr = Trainer('ma-cdmp', cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tempfile.mkdtemp())
tr.method.train()
for _ in range(10): tr.train_step()
t = time.process_time()
for _ in range(STEPS): tr.train_step()
print((time.process_time() - t) / STEPS * 1000)
"""


def run(code: str, src: Path, steps: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", code.replace("STEPS", str(steps))]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=src.parent)
    out = done.stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="a checkout of the previous trainer's commit")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    old_src = Path(a.old).resolve() / "src"
    old, new = [], []
    for _ in range(a.rounds):
        old.append(run(OLD, old_src, a.steps))
        new.append(run(NEW, here, a.steps))
    print("| trainer | CPU ms per step, each round | median |")
    print("| --- | --- | --- |")
    for name, v in (("previous", old), ("current", new)):
        print(f"| {name} | {', '.join(f'{x:.0f}' for x in v)} | {statistics.median(v):.1f} |")
    print(f"\ncurrent / previous (medians): {statistics.median(new) / statistics.median(old):.3f}")


if __name__ == "__main__":
    main()
