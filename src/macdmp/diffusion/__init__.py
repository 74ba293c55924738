"""Diffusion building blocks: backbones, noise schedules and samplers, kept apart and composed."""

from macdmp.diffusion.backbones import HalfUNet, TemporalUNet
from macdmp.diffusion.sampler import SOLVERS, Conditioning, dpm_levels, dpm_warm_level, sample
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule, make_betas

__all__ = [
    "SCHEDULES",
    "SOLVERS",
    "Conditioning",
    "HalfUNet",
    "NoiseSchedule",
    "TemporalUNet",
    "dpm_levels",
    "dpm_warm_level",
    "make_betas",
    "sample",
]
