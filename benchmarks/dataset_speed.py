"""Dataset speed: collection env-frames/s, compression filters, and windows/s of the sampler.

    .venv/bin/python benchmarks/dataset_speed.py        # the tables in docs/guide/datasets.md
    .venv/bin/python benchmarks/dataset_speed.py --quick            # a smaller, faster run
    .venv/bin/python benchmarks/dataset_speed.py --file paper.h5    # sample from an existing file

Each cell is the median of --repeats timings. Collection runs the end-to-end `collect` (behaviour
policy, batched core, HDF5 writing) into a temporary folder; the filter table writes one batch
of trajectories with each HDF5 filter; the sampler draws batches with `WindowDataset.sample`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numba
import numpy as np

from macdmp.data.collect import CollectSettings, collect, run_batch
from macdmp.data.format import COMPRESSIONS, _compression_kwargs
from macdmp.data.windows import open_windows
from macdmp.policies import make_policy
from macdmp.sim.config import PRESETS


def collection_rate(
    folder: Path, trajectories: int, frames: int, repeats: int, threads: int
) -> float:
    rates = []
    for r in range(repeats + 1):  # the first run warms up (compiles or loads cached kernels)
        out = folder / f"bench{r}.h5"
        res = collect(CollectSettings(out=str(out), trajectories=trajectories, frames=frames,
                                      threads=threads),
                      progress=False)  # fmt: skip
        out.unlink()
        if r:
            rates.append(res.env_frames / res.seconds)
    return statistics.median(rates)


def filter_table(folder: Path, batch: int, frames: int, repeats: int) -> list[tuple]:
    numba.set_num_threads(1)  # as `collect` does by default
    arrays = run_batch(PRESETS["n9-2to7"], list(range(batch)), frames, make_policy("behaviour"))
    raw = sum(arrays[k].nbytes for k in ("obs", "actions", "rewards"))
    rows = []
    for comp in COMPRESSIONS:
        write, read = [], []
        for _ in range(repeats):
            path = folder / f"{comp}.h5"
            t0 = time.perf_counter()
            with h5py.File(path, "w") as f:
                for key in ("obs", "actions", "rewards"):
                    a = arrays[key]
                    f.create_dataset(key, data=a, chunks=(1, *a.shape[1:]), fletcher32=True,
                                     **_compression_kwargs(comp))  # fmt: skip
            write.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with h5py.File(path, "r") as f:
                for key in ("obs", "actions", "rewards"):
                    f[key][...]
            read.append(time.perf_counter() - t0)
            size = path.stat().st_size
            path.unlink()
        rows.append((comp, raw / 2**20 / statistics.median(write),
                     raw / 2**20 / statistics.median(read), size / raw))  # fmt: skip
    return rows


def sampler_rate(ds, batch: int, seconds: float, repeats: int) -> float:
    rng = np.random.default_rng(0)
    ds.sample(batch, rng)
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ds.sample(batch, rng)
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--file", help="sample windows from this dataset (default: a fresh demo one)")
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--gamma", type=float, default=0.99)
    args = ap.parse_args()
    traj, frames = (16, 500) if args.quick else (256, 2000)
    load = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba threads {numba.get_num_threads()}, load avg {load:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"\ncollection (end to end, 4 scenarios, {traj} trajectories x {frames} frames)")
        print(f"{'threads':>7} {'env-frames/s':>14}")
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            rate = collection_rate(folder, traj, frames, args.repeats, threads)
            print(f"{threads:>7} {rate:>14,.0f}")

        batch = 32 if args.quick else 250
        print(
            f"\nHDF5 filters on {batch} trajectories x {frames} frames of n9-2to7 "
            "(obs, actions, rewards; with shuffle and Fletcher-32)"
        )
        print(f"{'filter':<8} {'write MiB/s':>12} {'read MiB/s':>11} {'size/raw':>9}")
        for comp, w, r, ratio in filter_table(folder, batch, frames, args.repeats):
            print(f"{comp:<8} {w:>12,.0f} {r:>11,.0f} {ratio:>9.3f}")

        path = args.file
        if path is None:
            path = folder / "demo.h5"
            collect(CollectSettings(out=str(path)), progress=False)
        t0 = time.perf_counter()
        ds = open_windows(path, args.horizon, args.gamma)
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        _ = ds.stats
        stats_s = time.perf_counter() - t0
        print(
            f"\nwindow sampler on {path} (H={args.horizon}, gamma={args.gamma}, "
            f"{ds.n_windows:,} windows; open {opened:.1f} s, stats {stats_s:.2f} s)"
        )
        print(f"{'batch':>6} {'windows/s':>12}")
        for b in (64, 256, 1024) if not args.quick else (256,):
            print(f"{b:>6} {sampler_rate(ds, b, 0.5 if args.quick else 1.0, args.repeats):>12,.0f}")


if __name__ == "__main__":
    main()
