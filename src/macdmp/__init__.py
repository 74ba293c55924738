"""MA-CDMP: multi-agent conditional diffusion planning with mean-field communication for MF-TDMA.

Pipeline, by folder: `sim` (the network), `policies` (non-learning allocators), `data`
(offline datasets), `diffusion` (backbones, schedules, samplers), `planner` (MA-CDMP's models,
training and the receding-horizon agent), `eval` (episodes, metrics, experiments, plots).
"""

from macdmp.sim.config import PRESETS, ScenarioConfig, load_scenario
from macdmp.sim.core import BatchedNetworks
from macdmp.sim.env import MFTDMAEnv, parallel_env

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "BatchedNetworks",
    "MFTDMAEnv",
    "ScenarioConfig",
    "load_scenario",
    "parallel_env",
]
