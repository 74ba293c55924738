"""MA-CDMP: multi-agent conditional diffusion planning with mean-field communication for MF-TDMA.

Pipeline, by folder: `sim` (the network), `policies` (non-learning allocators), `data`
(offline datasets), `diffusion` (backbones, schedules, samplers), `planner` (MA-CDMP's models,
training and the receding-horizon agent), `eval` (episodes, metrics, experiments, plots).
"""

from typing import Any

from macdmp.sim.config import PRESETS, ScenarioConfig, load_scenario
from macdmp.sim.core import BatchedNetworks

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "BatchedNetworks",
    "MFTDMAEnv",
    "ScenarioConfig",
    "load_scenario",
    "parallel_env",
]


def __getattr__(name: str) -> Any:
    # the PettingZoo adapter is imported on first use, so the core runs without pettingzoo
    if name in ("parallel_env", "MFTDMAEnv"):
        from macdmp.sim import env

        return getattr(env, name)
    raise AttributeError(f"module 'macdmp' has no attribute {name!r}")
