"""MA-CDMP: the three models, their joint training, checkpoints and batched planning."""

from macdmp.planner.checkpoint import CheckpointMismatchError, load_run, pick_device
from macdmp.planner.models import (
    PRESETS,
    InverseDynamics,
    Normalizer,
    PlannerConfig,
    PlannerModels,
    make_config,
)
from macdmp.planner.plan import plan
from macdmp.planner.train import Trainer, joint_loss, read_losses, train

__all__ = [
    "PRESETS",
    "CheckpointMismatchError",
    "InverseDynamics",
    "Normalizer",
    "PlannerConfig",
    "PlannerModels",
    "Trainer",
    "joint_loss",
    "load_run",
    "make_config",
    "pick_device",
    "plan",
    "read_losses",
    "train",
]
