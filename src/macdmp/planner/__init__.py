"""MA-CDMP: the three models (a method of ``macdmp.methods``), their joint loss and batched
planning."""

from macdmp.planner.models import (
    PlannerConfig,
    PlannerModels,
    joint_loss,
    make_config,
)
from macdmp.planner.plan import plan
from macdmp.planner.policy import PlannerActor

__all__ = [
    "PlannerActor",
    "PlannerConfig",
    "PlannerModels",
    "joint_loss",
    "make_config",
    "plan",
]
