"""Offline data collection: the behaviour policy run on many networks at once, written to HDF5.

Trajectories are grouped by scenario and stepped in batches of `batch_size` networks through the
batched core. Seed scheme (documented in `docs/guide/datasets.md`): with the dataset seed S and the
trajectories numbered k = 0, 1, ... across the scenarios in the order given, trajectory k runs on
the network and traffic of env seed `S * 2**16 + k`. Distinct dataset seeds therefore never share a
trajectory, and every training env seed is below 2**31; [2**31, 2**32) is reserved for evaluation.
The behaviour policy's noise stream is seeded per batch from S and the batch's env seeds
(`Behaviour.reset`), so the same command reproduces the file bit for bit.

`--policies` (or a `--quality` preset) shares each scenario's trajectories among several
policies instead, one block per policy; the seed scheme is unchanged, and the file records each
trajectory's policy (`policy`, indexing the root attribute `policies`).
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np

from macdmp.common.locking import lock_output, lock_path_for_file
from macdmp.common.outputs import check_output_file
from macdmp.common.progress import progress_bar
from macdmp.common.signals import check_stop, stop_at_safe_points
from macdmp.data.format import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    MAX_POLICIES,
    TOTAL_FIELDS,
    TRAIN_SEED_LIMIT,
    atomic_dataset,
)
from macdmp.policies import make_policy
from macdmp.policies.allocators import ALLOCATORS
from macdmp.sim.config import PAPER_SCENARIOS, RF_MODES, ScenarioConfig, load_scenario
from macdmp.sim.core import STAT_FIELDS, BatchedNetworks

SEED_STRIDE = 2**16  # trajectories per dataset at most
# One batch's arrays are held in memory until written: B x (F + 1) x N x BATCH_BYTES_PER_NODE_FRAME
# bytes (obs 8, actions 4, rewards 4, drops 2). Above BATCH_MEMORY_LIMIT a collection is refused
# before it starts instead of exhausting the machine's memory.
BATCH_BYTES_PER_NODE_FRAME = 18
BATCH_MEMORY_LIMIT = 16 * 2**30
# A collection does not start in a folder with less free space than the smaller of its
# uncompressed size and this: on a full disk HDF5 cannot even close the file it gave up on.
MIN_FREE_BYTES = 64 * 2**20
MAX_DATASET_SEED = TRAIN_SEED_LIMIT // SEED_STRIDE - 1  # 32767


@dataclass(frozen=True)
class CollectPreset:
    scenarios: tuple[str, ...]
    trajectories: int
    frames: int


COLLECT_PRESETS: dict[str, CollectPreset] = {
    # the paper's offline data (Sec. VI-A): 1,000 trajectories of 30 s across four scenarios
    "paper": CollectPreset(PAPER_SCENARIOS, 1000, 6000),
    # a few seconds on a laptop, enough to exercise training end to end
    "demo": CollectPreset(PAPER_SCENARIOS, 64, 2000),
}


# Dataset qualities in the manner of OG-MARL's Good / Medium / Poor / Replay and D4RL's
# medium-replay: which policies produce the trajectories, with weights (shares of each
# scenario's trajectories). docs/guide/datasets.md gives each one's QoS.
QUALITY_PRESETS: dict[str, tuple[str, ...]] = {
    "good": ("behaviour:0.1",),  # close to the static carried split
    "medium": ("behaviour:0.5",),  # the paper's data
    "poor": ("behaviour:1.0",),
    # better and worse behaviour side by side: three noise levels and three adaptive rules
    "mixed": (
        "behaviour:0.1",
        "behaviour:0.5",
        "behaviour:1.0",
        "proportional",
        "maxweight",
        "equal",
    ),
}
# Policies a dataset may mix: the behaviour policy at any sigma and the allocators that take
# no per-run argument (static needs per-node demands, which differ between networks).
# Any of them may carry log-normal noise as NAME:SIGMA (equal and random excepted).
MIXABLE = ("behaviour[:SIGMA]", *(n for n in ALLOCATORS if n != "static"))


def parse_policy_mix(items: list[str] | tuple[str, ...]) -> list[tuple[str, float]]:
    """``["SPEC[=WEIGHT]", ...]`` -> [(spec, weight)], checked; ValueError names --policies."""
    out: list[tuple[str, float]] = []
    for item in items:
        spec, _, w = str(item).partition("=")
        spec = spec.strip()
        name, _, arg = spec.partition(":")
        if name not in ("behaviour", *MIXABLE) or (arg and name in ("random", "equal")):
            raise ValueError(f"--policies: {spec!r} is not one of {', '.join(MIXABLE)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(
                f"--policies: weight of {spec!r} must be a number (got {w!r})"
            ) from None
        if not np.isfinite(weight) or weight <= 0:
            raise ValueError(f"--policies: weight of {spec!r} must be > 0 (got {w!r})")
        make_policy(spec)  # the policy's own checks (e.g. behaviour sigma)
        out.append((spec, weight))
    if not out:
        raise ValueError("--policies: give at least one policy")
    if len(out) > MAX_POLICIES:
        raise ValueError(f"--policies: at most {MAX_POLICIES} policies (got {len(out)})")
    specs = [s for s, _ in out]
    if len(set(specs)) != len(specs):
        raise ValueError(f"--policies: a policy is listed twice: {specs}")
    return out


@dataclass
class CollectSettings:
    """Everything that determines a collected file (stored in its `collection` attribute)."""

    out: str
    scenarios: list[str] = field(default_factory=lambda: list(PAPER_SCENARIOS))
    trajectories: int = 64
    frames: int = 2000
    seed: int = 0
    rf: str | None = None
    behaviour_noise: float = 0.5
    # Several policies, "SPEC[=WEIGHT]" each (empty: the behaviour policy at behaviour_noise);
    # each scenario's trajectories are shared among them in proportion to the weights.
    policies: list[str] = field(default_factory=list)
    batch_size: int = 256
    compression: str = DEFAULT_COMPRESSION
    # Numba threads of the core. 1 by default: the core synchronises its threads every frame,
    # and when another process competes for the cores that barrier makes 2 threads ~10x
    # slower than 1 (docs/guide/datasets.md). The data do not depend on it.
    threads: int = 1

    def check(self) -> None:
        """Raise ValueError naming the first invalid setting."""
        if not self.scenarios:
            raise ValueError("--scenarios: give at least one scenario")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError(f"--scenarios: a scenario is listed twice: {self.scenarios}")
        if self.trajectories < len(self.scenarios) or self.trajectories > SEED_STRIDE:
            raise ValueError(
                f"--trajectories: must be in [{len(self.scenarios)} (one per scenario), "
                f"{SEED_STRIDE}] (got {self.trajectories})"
            )
        if self.frames < 1:
            raise ValueError(f"--frames: must be >= 1 (got {self.frames})")
        if not 0 <= self.seed <= MAX_DATASET_SEED:
            raise ValueError(
                f"--seed: must be in [0, {MAX_DATASET_SEED}] so that every env seed "
                f"(seed * 2**16 + k) stays below 2**31, the range reserved for training "
                f"(got {self.seed})"
            )
        if self.rf is not None and self.rf not in RF_MODES:
            raise ValueError(f"--rf: {self.rf!r} is not one of {', '.join(RF_MODES)}")
        if not np.isfinite(self.behaviour_noise) or self.behaviour_noise < 0:
            raise ValueError(
                f"--behaviour-noise: must be a finite sigma >= 0 (got {self.behaviour_noise})"
            )
        if self.policies:
            mix = parse_policy_mix(self.policies)
            if len(mix) > self.trajectories // len(self.scenarios):
                raise ValueError(
                    f"--policies: {len(mix)} policies need at least {len(mix)} trajectories per "
                    f"scenario (got {self.trajectories} over {len(self.scenarios)} scenarios)"
                )
        if self.batch_size < 1:
            raise ValueError(f"--batch-size: must be >= 1 (got {self.batch_size})")
        max_threads = numba.config.NUMBA_NUM_THREADS
        if not 1 <= self.threads <= max_threads:
            raise ValueError(f"--threads: must be in [1, {max_threads}] (got {self.threads})")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"--compression: {self.compression!r} is not one of {', '.join(COMPRESSIONS)}"
            )

    def command(self) -> str:
        """The canonical `macdmp collect` command line that reproduces this file."""
        argv = [
            "macdmp", "collect", "--out", self.out,
            "--scenarios", ",".join(self.scenarios),
            "--trajectories", str(self.trajectories),
            "--frames", str(self.frames),
            "--seed", str(self.seed),
        ]  # fmt: skip
        if self.rf is not None:
            argv += ["--rf", self.rf]
        if self.policies:
            argv += ["--policies", ",".join(f"{s}={w!r}" for s, w in self.mix())]
        else:
            argv += ["--behaviour-noise", repr(self.behaviour_noise)]
        argv += [
            "--batch-size", str(self.batch_size),
            "--compression", self.compression,
        ]  # fmt: skip
        if self.threads != 1:
            argv += ["--threads", str(self.threads)]
        return shlex.join(argv)

    def mix(self) -> list[tuple[str, float]]:
        """[(policy spec, weight)]: the given policies, or the behaviour policy alone."""
        if not self.policies:
            return [(f"behaviour:{self.behaviour_noise!r}", 1.0)]
        return parse_policy_mix(self.policies)


@contextmanager
def _restore_threads(n: int) -> Iterator[None]:
    try:
        yield
    finally:
        numba.set_num_threads(n)


def split_trajectories(total: int, n_scenarios: int) -> list[int]:
    """Trajectories per scenario: as equal as possible, the first ones get the remainder."""
    base, extra = divmod(total, n_scenarios)
    return [base + (i < extra) for i in range(n_scenarios)]


def split_weighted(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders, ties to the first),
    every share at least 1 when ``total`` allows."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    for i in range(len(w)):  # a policy with a tiny weight still gets one trajectory
        while counts[i] == 0 and total >= len(w):
            j = int(np.argmax(counts))
            counts[j] -= 1
            counts[i] += 1
    return [int(c) for c in counts]


def trajectory_seed(dataset_seed: int, k: int) -> int:
    """Env seed of the dataset's k-th trajectory (k counts across scenarios in order)."""
    return dataset_seed * SEED_STRIDE + k


def _check_resources(settings: CollectSettings, cfgs: list[ScenarioConfig], out: Path) -> None:
    """Refuse, before any work, a batch too large for memory and a nearly full disk."""
    n_max = max(c.n_nodes for c in cfgs)
    batch = min(settings.batch_size, settings.trajectories)
    need = batch * (settings.frames + 1) * n_max * BATCH_BYTES_PER_NODE_FRAME
    if need > BATCH_MEMORY_LIMIT:
        raise ValueError(
            f"--frames/--batch-size: one batch of {batch} networks x {settings.frames} frames x "
            f"{n_max} nodes holds {need / 2**30:.1f} GiB in memory, above the limit of "
            f"{BATCH_MEMORY_LIMIT / 2**30:.0f} GiB; lower --batch-size or --frames"
        )
    total = sum(c.n_nodes for c in cfgs) * settings.trajectories // len(cfgs)
    size = total * (settings.frames + 1) * BATCH_BYTES_PER_NODE_FRAME  # uncompressed
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < min(size, MIN_FREE_BYTES):
        raise ValueError(
            f"--out: only {free / 2**20:.1f} MiB free in {folder}; the dataset takes up to "
            f"{size / 2**20:.1f} MiB (uncompressed); free some space or choose another folder"
        )


@dataclass
class CollectResult:
    path: Path
    seconds: float
    env_frames: int
    bytes: int


def run_batch(
    cfg: ScenarioConfig,
    seeds: list[int],
    frames: int,
    policy: Any,
    progress: Any = None,
    policy_index: int = 0,
) -> dict[str, np.ndarray]:
    """Run `frames` frames of the policy on one network per seed; the SCHEMA arrays (the
    trajectories' `policy` entries are `policy_index`)."""
    sim = BatchedNetworks(cfg, seeds)
    b, n = sim.batch_size, sim.n_nodes
    obs_buf = np.zeros((b, frames + 1, n, 4), dtype=np.uint16)
    act_buf = np.empty((b, frames, n), dtype=np.float32)
    rew_buf = np.empty((b, frames, n), dtype=np.float32)
    drop_buf = np.empty((b, frames, n), dtype=np.uint16)
    # mobile scenarios: the graph each observation's mean field was taken over
    adj_buf = np.zeros((b, frames + 1 if cfg.mobile else 0, n, n), dtype=bool)
    start_adjacency = sim.adjacency.copy()  # a mobile scenario's moves on in place
    if cfg.mobile:
        adj_buf[:, 0] = start_adjacency
    policy.reset(sim)
    obs = sim.obs
    tick = max(1, 20_000 // b)  # progress updates every ~20k env-frames
    for t in range(frames):
        check_stop()  # a safe point: SIGINT/SIGTERM stop here (macdmp.common.signals)
        # rounded to float32 before the step, so the stored actions are exactly those simulated
        demands = policy.act(obs, sim.mean_field(obs)).astype(np.float32)
        res = sim.step(demands)
        obs = res.obs
        act_buf[:, t] = demands
        rew_buf[:, t] = res.reward
        if res.dropped_at.max(initial=0) > np.iinfo(np.uint16).max:
            raise OverflowError("dropped: more than 65,535 drops at a node in one frame")
        drop_buf[:, t] = res.dropped_at
        obs_buf[:, t + 1] = obs  # integer queue lengths <= queue_capacity, exact in uint16
        if cfg.mobile:
            adj_buf[:, t + 1] = sim.adjacency
        if progress is not None and (t + 1) % tick == 0:
            progress.update(tick * b)
    if progress is not None:
        progress.update((frames % tick) * b)
    stat = {k: i for i, k in enumerate(STAT_FIELDS)}
    totals = np.empty((b, len(TOTAL_FIELDS)))
    for j, key in enumerate(TOTAL_FIELDS):
        if key == "queued_end":
            totals[:, j] = sim.queued()
        elif key == "reward_sum":
            totals[:, j] = rew_buf.astype(np.float64).sum(axis=(1, 2))
        else:
            totals[:, j] = sim.totals[:, stat[key]]
    return {
        "obs": obs_buf,
        "actions": act_buf,
        "rewards": rew_buf,
        "dropped": drop_buf,
        "adjacency": start_adjacency,
        **({"adjacency_t": adj_buf} if cfg.mobile else {}),
        "positions_m": np.stack([net.positions_m for net in sim.networks]),
        "is_high": sim.is_high,
        "rates_ppf": sim.rates_ppf,
        "carried_ppf": sim.carried_ppf,
        "seeds": np.asarray(sim.seeds, dtype=np.int64),
        "policy": np.full(b, policy_index, dtype=np.uint8),
        "totals": totals,
    }


@stop_at_safe_points()  # SIGINT/SIGTERM stop at the next frame; the partial file is removed
def collect(settings: CollectSettings, force: bool = False, progress: bool = True) -> CollectResult:
    """Collect the dataset described by `settings` into `settings.out` (atomically)."""
    settings.check()
    out = check_output_file("--out", settings.out, force=force)
    cfgs = [load_scenario(s, rf=settings.rf) for s in settings.scenarios]
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"--scenarios: two scenarios share the name {names}")
    _check_resources(settings, cfgs, out)
    counts = split_trajectories(settings.trajectories, len(cfgs))
    mix = settings.mix()
    policies = [make_policy(spec, seed=settings.seed) for spec, _ in mix]
    described = [
        {"spec": spec, "weight": w, **p.describe()}
        for (spec, w), p in zip(mix, policies, strict=True)
    ]
    if settings.policies:
        behaviour = {"name": "mixture", "policies": [d["spec"] for d in described],
                     "weights": [d["weight"] for d in described]}  # fmt: skip
    else:
        behaviour = policies[0].describe()
    attrs = {
        "behaviour_policy": behaviour,
        "policies": described,
        "collection": {
            **asdict(settings),
            "trajectories_per_scenario": dict(zip(names, counts, strict=True)),
            "seed_scheme": "env_seed = seed * 2**16 + k, k = trajectory index across scenarios",
            "noise_stream": "per batch: numpy default_rng([seed, *batch env seeds])",
        },
        "command": settings.command(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    total_frames = settings.trajectories * settings.frames
    out.parent.mkdir(parents=True, exist_ok=True)  # like `evaluate --json/--plots`
    lock = lock_output(lock_path_for_file(out), f"--out {out}")  # one writer per file
    threads_before = numba.get_num_threads()
    numba.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    bar = progress_bar(total_frames, "collect", disable=not progress, unit="env-frame",
                       unit_scale=True)  # fmt: skip
    with lock, _restore_threads(threads_before), bar, atomic_dataset(
            settings.out, attrs, force=force, compression=settings.compression
    ) as writer:  # fmt: skip
        k = 0
        for cfg, count in zip(cfgs, counts, strict=True):
            writer.add_scenario(cfg, count, settings.frames)
            # the scenario's trajectories in one block per policy, in the order listed
            shares = split_weighted(count, [w for _, w in mix])
            first = np.cumsum([0, *shares[:-1]])
            for p, (policy, share) in enumerate(zip(policies, shares, strict=True)):
                for start in range(0, share, settings.batch_size):
                    size = min(settings.batch_size, share - start)
                    seeds = [trajectory_seed(settings.seed, k + int(first[p]) + start + i)
                             for i in range(size)]  # fmt: skip
                    bar.set_postfix_str(f"{cfg.name} {mix[p][0]}")
                    arrays = run_batch(cfg, seeds, settings.frames, policy, bar, p)
                    writer.write(cfg.name, arrays)
            writer.finish_scenario(cfg.name)
            k += count
    seconds = time.perf_counter() - t0
    return CollectResult(out, seconds, total_frames, out.stat().st_size)
