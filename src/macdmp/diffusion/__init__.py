"""Diffusion building blocks: backbones, noise schedules and samplers, kept apart and composed."""

from macdmp.diffusion.backbones import (
    AgentAttentionUNet,
    HalfUNet,
    TemporalUNet,
    condition_keep,
)
from macdmp.diffusion.sampler import (
    SOLVERS,
    Conditioning,
    dpm_levels,
    dpm_warm_level,
    guided_eps,
    sample,
)
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule, make_betas

__all__ = [
    "AgentAttentionUNet",
    "SCHEDULES",
    "SOLVERS",
    "Conditioning",
    "HalfUNet",
    "NoiseSchedule",
    "TemporalUNet",
    "condition_keep",
    "dpm_levels",
    "dpm_warm_level",
    "guided_eps",
    "make_betas",
    "sample",
]
