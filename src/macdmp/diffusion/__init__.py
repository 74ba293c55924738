"""Diffusion building blocks: backbones, noise schedules and samplers, kept apart and composed."""

from macdmp.diffusion.backbones import HalfUNet, TemporalUNet
from macdmp.diffusion.sampler import SOLVERS, Conditioning, dpm_levels, sample
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule, make_betas

__all__ = [
    "SCHEDULES",
    "SOLVERS",
    "Conditioning",
    "HalfUNet",
    "NoiseSchedule",
    "TemporalUNet",
    "dpm_levels",
    "make_betas",
    "sample",
]
