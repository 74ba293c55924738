"""The scales of ``macdmp bench``: the reproduction's scales (:mod:`macdmp.reproduce.scales`)
with three training seeds, plus each family's dataset size and the RF conditions.

Training and evaluation take the reproduction's settings at the same scale: the methods'
preset with its overrides, the in-loop evaluation on the validation seeds (which chooses each
run's best checkpoint; ``eval_every`` must be set), the held-out test seeds and frames, and
MA-CDMP's planner options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from macdmp.reproduce.scales import SCALES as REPRODUCE_SCALES
from macdmp.reproduce.scales import Scale

TRAINING_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class BenchScale:
    name: str
    describe: str
    base: Scale  # training and evaluation settings (a reproduction scale, three seeds)
    families: tuple[str, ...]  # the default of --families
    # (trajectories, frames) of every family's dataset; None: each family's own (families.py)
    data: tuple[int, int] | None
    rfs: tuple[str, ...]  # the RF conditions of the test
    # bench methods not run at this scale, with the reason (the table says it in their cells)
    skip: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.base.seeds


def _base(name: str, common: dict | None = None, **changes) -> Scale:
    """The reproduction's scale ``name`` with three training seeds and validation episodes as
    long as the test's: the in-loop evaluations run ``eval_frames`` = the scale's test frames.
    Shorter ones chose badly: at paper scale with 200-frame validation episodes under load
    1.0, a policy that lets its backlog grow looks good for 200 frames and not over the test's
    1,000 (MA-CQL on `load100`: 29 ms at its chosen step and 37 ms at the last on validation,
    135 and 78 ms on the test networks; docs/notes/bench-leases.md)."""
    sc = REPRODUCE_SCALES[name]
    common = {**sc.common, **(common or {}), "eval_frames": sc.eval_frames}
    return dataclasses.replace(sc, seeds=TRAINING_SEEDS, common=common, **changes)


_SMOKE = REPRODUCE_SCALES["smoke"]
# The smoke scale's sampling of the diffusion baselines the reproduction does not evaluate:
# fewer solver steps and candidates, as MA-CDMP's planner takes 3 steps there. With their
# demo presets' sampling, MADiff's and MA-Diffuser's evaluations took half the smoke bench's
# time (docs/guide/bench.md gives the smoke bench's time with these).
SMOKE_SAMPLING = {
    "madiff": {"sample_steps": 3},
    "ma-dd": {"sample_steps": 3},
    "ma-diffuser": {"candidates": 2},
}

SCALES: dict[str, BenchScale] = {
    "smoke": BenchScale(
        name="smoke",
        describe="the reproduction's smoke settings (tiny models, 40 training steps, a "
        "validation point every 20 steps on 1 seed x 20 frames, 2 test seeds x 20 frames), "
        "12 trajectories x 160 frames per family, ideal RF: checks that every unit runs and "
        "every cell is filled; the numbers mean nothing",
        base=_base("smoke", per_method={**_SMOKE.per_method, **SMOKE_SAMPLING}),
        families=("paper", "load100", "sessions"),
        data=(12, 160),
        rfs=("ideal",),
    ),
    "demo": BenchScale(
        name="demo",
        describe="the reproduction's demo settings (the demo presets, 600 training steps, a "
        "validation point every 200 steps on 1 seed x 100 frames, 3 test seeds x 100 frames), "
        "64 trajectories x 2,000 frames per family, ideal RF; CPU hours",
        base=_base("demo"),
        families=("paper", "load100", "sessions"),
        data=(64, 2000),
        rfs=("ideal",),
    ),
    "paper": BenchScale(
        name="paper",
        describe="the paper's settings: the paper presets at 100,000 training steps, a "
        "validation point every 10,000 steps on 2 seeds x 1,000 frames, 3 test seeds x 1,000 "
        "frames, each family's own dataset size, ideal and limited RF; on GPUs",
        # validation every 10,000 steps (not the reproduction's 5,000): its episodes are five
        # times longer, and the reproduction's best checkpoints were at 10,000 steps
        base=_base("paper", common={"max_steps": 100_000, "eval_every": 10_000}),
        families=("paper", "load90", "load100", "sessions", "bursty", "mobile", "large"),
        data=None,
        rfs=("ideal", "limited"),
    ),
}
SCALE_NAMES = tuple(SCALES)


def get_scale(name: str) -> BenchScale:
    if name not in SCALES:
        raise ValueError(f"--scale: {name!r} is not one of {', '.join(SCALES)}")
    return SCALES[name]
