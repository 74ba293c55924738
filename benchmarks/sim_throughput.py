"""Simulator speed: env-frames/s and agent-frames/s of the batched core, and PettingZoo frames/s.

    .venv/bin/python benchmarks/sim_throughput.py            # the table in docs/guide/simulator.md
    .venv/bin/python benchmarks/sim_throughput.py --quick    # a smaller, faster run
    .venv/bin/python benchmarks/sim_throughput.py --families # env-frames/s per scenario family

Each cell is the median of --repeats timings of --frames frames, after a warm-up that compiles
the kernel. The policy is `carried` (fixed demands), so the numbers are the simulator's own.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import macdmp
from macdmp.sim.config import PRESETS, ScenarioConfig, load_scenario
from macdmp.sim.core import BatchedNetworks
from macdmp.sim.families import FAMILIES


def core_rate(cfg: ScenarioConfig, batch: int, frames: int, repeats: int) -> float:
    sim = BatchedNetworks(cfg, list(range(batch)))
    demands = sim.carried_ppf / sim.carried_ppf.sum(axis=1, keepdims=True) * cfg.rbs
    sim.step(demands)  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(frames):
            sim.step(demands)
        times.append(time.perf_counter() - t0)
    return batch * frames / statistics.median(times)


def pettingzoo_rate(frames: int, repeats: int) -> float:
    env = macdmp.parallel_env(scenario="n9-2to7", seed=0, frames=10**9)
    env.reset()
    actions = {a: 4.4 for a in env.possible_agents}
    env.step(actions)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(frames):
            env.step(actions)
        times.append(time.perf_counter() - t0)
    return frames / statistics.median(times)


def family_table(batch: int, frames: int, repeats: int) -> None:
    """env-frames/s of each family's scenarios (their mean), and the ratio to `paper`'s."""
    print(f"batch {batch}, {frames} frames a timing, median of {repeats}; policy `carried`")
    print(f"{'family':>9} {'N':>9} {'env-frames/s':>14} {'vs paper':>9}")
    rates = {}
    for name, fam in FAMILIES.items():
        cfgs = [load_scenario(s) for s in fam.scenarios]
        n = max(c.n_nodes for c in cfgs)
        f = frames if n <= 9 else max(10, frames * 9 // n)
        rates[name] = statistics.mean(core_rate(c, batch, f, repeats) for c in cfgs)
        nodes = "-".join(sorted({str(c.n_nodes) for c in cfgs}, key=int))
        ratio = rates[name] / rates["paper"]
        print(f"{name:>9} {nodes:>9} {rates[name]:>14,.0f} {ratio:>9.2f}")
    dyn = [k for k in ("sessions", "bursty", "mobile") if k in rates]
    worst = min(rates[k] / rates["paper"] for k in dyn)
    print(
        f"target: the dynamic families (sessions, bursty, mobile) within 2x of paper: "
        f"slowest at {worst:.2f}x ({'met' if worst >= 0.5 else 'MISSED'})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes and frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", action="store_true", help="only the table per family")
    ap.add_argument("--batch", type=int, default=256, help="networks per batch (--families)")
    args = ap.parse_args()
    if args.families:
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"numba threads {__import__('numba').get_num_threads()}"
        )
        family_table(args.batch, 100 if args.quick else 400, args.repeats)
        return
    batches = [1, 16, 256] if args.quick else [1, 4, 16, 64, 256, 1024]
    big = ScenarioConfig(name="n64", n_nodes=64, n_high=16)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numba threads {__import__('numba').get_num_threads()}"
    )
    print(f"{'N':>4} {'batch':>6} {'env-frames/s':>14} {'agent-frames/s':>16}")
    for cfg in (PRESETS["n9-2to7"], big):
        for b in batches:
            work = 20_000 if args.quick else 60_000
            frames = max(20, min(2000, work // b))
            if cfg.n_nodes > 9:
                frames = max(10, frames // 4)
            rate = core_rate(cfg, b, frames, args.repeats)
            print(f"{cfg.n_nodes:>4} {b:>6} {rate:>14,.0f} {rate * cfg.n_nodes:>16,.0f}")
    pz = pettingzoo_rate(2000 if args.quick else 10_000, args.repeats)
    print(f"PettingZoo ParallelEnv, N = 9, one environment: {pz:,.0f} frames/s")
    target = core_rate(PRESETS["n9-2to7"], 1024, 60, args.repeats)
    print(
        f"target >= 50,000 env-frames/s batched at N = 9: {target:,.0f} "
        f"({'met' if target >= 50_000 else 'MISSED'}); "
        f"target >= 5,000 PettingZoo frames/s: {'met' if pz >= 5_000 else 'MISSED'}"
    )
    print(f"paper dataset (6,000,000 frames at N = 8-9) at this rate: {6e6 / target:.0f} s")


if __name__ == "__main__":
    main()
