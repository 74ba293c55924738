"""The three scales of ``macdmp reproduce``: what is collected, trained and evaluated at each.

``smoke``: minutes on a 2-core CPU (CI runs it end to end): tiny models, a few dozen steps,
short episodes. Every figure is drawn, but its numbers say nothing about the paper's claims.
``demo``: under an hour on a CPU: the ``demo`` presets, a few hundred steps.
``paper``: the paper's settings (Sec. VI-A): the ``paper`` presets, 100 epochs x 1,000 steps,
3 training seeds, 3 held-out scenario seeds x 1,000-frame (5 s) episodes; on GPUs.

Every learned method takes its named preset with the overrides below. ``common`` overrides are
fields of every configuration (``TrainConfig``); ``sized`` overrides apply to each method that
has the field (so that a method added later is shrunk the same way at the smoke scale);
``per_method`` overrides win over both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scale:
    name: str
    describe: str
    # the dataset: `macdmp collect` over the four paper scenarios
    trajectories: int
    frames: int
    # training: the methods' preset plus overrides
    preset: str
    seeds: tuple[int, ...]  # training seeds of the learning curves (Figs. 3, 5)
    common: dict[str, Any]
    sized: dict[str, Any] = field(default_factory=dict)
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    # evaluation (the paper's protocol): held-out scenario seeds and episode length
    eval_seeds: int = 3
    eval_frames: int = 1000
    # MA-CDMP's planner options at evaluation, except where a figure sweeps one
    planner: dict[str, Any] = field(default_factory=dict)
    # the sweeps
    horizons: tuple[int, ...] = (8, 16, 32, 64)
    guide_scales: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
    dpm_steps: tuple[int, ...] = (20, 10, 5, 3)
    node_counts: tuple[int, ...] = (6, 8, 9, 12, 16)
    device: str | None = None  # None: the GPU when there is one


SCALES: dict[str, Scale] = {
    "smoke": Scale(
        name="smoke",
        describe="tiny models, 40 training steps, 2 held-out seeds x 20 frames: checks that "
        "every unit runs and every figure is drawn; the numbers mean nothing",
        trajectories=8,
        frames=160,
        preset="demo",
        seeds=(0, 1),
        common={
            "max_steps": 40,
            "batch_size": 16,
            "warmup_steps": 5,
            "ema_start": 5,
            "log_every": 10,
            "ckpt_every": 40,
            "eval_every": 20,
            "eval_seeds": 1,
            "eval_frames": 10,
        },
        sized={
            "dim": 8,
            "dim_mults": (1, 2),
            "inv_hidden": 32,
            "hidden": 32,
            "layers": 1,
            "embed": 32,
            "reward_hidden": 16,
        },
        # MA-CDMP's K = 50 (the paper: 100): DPM-Solver can still take 20 steps (Fig. 9), and
        # DDPM's 50 guided steps per frame keep its evaluation under half a minute on the CPU
        per_method={"ma-cdmp": {"n_diffusion_steps": 50}},
        eval_seeds=2,
        eval_frames=20,
        planner={"steps": 3},
        device="cpu",
    ),
    "demo": Scale(
        name="demo",
        describe="the methods' demo presets shortened to 600 steps (2-level U-Net, K = 50), the "
        "demo dataset, 3 held-out seeds x 100 frames: about 40 minutes on a 2-core CPU",
        trajectories=64,
        frames=2000,
        preset="demo",
        seeds=(0, 1),
        common={
            "max_steps": 600,
            "log_every": 50,
            "ckpt_every": 200,
            "eval_every": 200,
            "eval_seeds": 1,
            "eval_frames": 50,
        },
        sized={"dim_mults": (1, 2)},
        per_method={"ma-cdmp": {"lr": 1e-3, "n_diffusion_steps": 50}},  # K = 50: see smoke
        eval_seeds=3,
        eval_frames=100,
        planner={"steps": 3},
        device="cpu",
    ),
    "paper": Scale(
        name="paper",
        describe="the paper's settings (Sec. VI-A): the paper presets, 100 epochs x 1,000 "
        "steps, 3 training seeds, a learning-curve point every 5,000 steps, 3 held-out scenario "
        "seeds x 1,000 frames (5 s episodes), ideal and limited RF; on GPUs",
        trajectories=1000,
        frames=6000,
        preset="paper",
        seeds=(0, 1, 2),
        common={"eval_every": 5000, "eval_seeds": 2, "eval_frames": 200},
        eval_seeds=3,
        eval_frames=1000,
        planner={},
    ),
}
SCALE_NAMES = tuple(SCALES)


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"--scale: {name!r} is not one of {', '.join(SCALES)}")
    return SCALES[name]
