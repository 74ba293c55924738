"""The method interface, the one trainer, the one checkpoint format and run folders as policies.

Every learned method (MA-CDMP in ``planner/``, the baselines in ``baselines/``) is a
:class:`Method`; ``macdmp train --method NAME`` trains it with :class:`Trainer`; a run folder is a
policy through :class:`RunPolicy` (``--policy RUN_DIR``).
"""

from macdmp.methods.base import (
    Actor,
    Method,
    TrainConfig,
    get_method,
    load_plugins,
    lr_factor,
    make_config,
    method_names,
    plugin_methods,
    register_method,
)
from macdmp.methods.checkpoint import (
    CheckpointMismatchError,
    load_run,
    pick_device,
    read_checkpoint,
)
from macdmp.methods.trainer import (
    Trainer,
    TrainingInterrupted,
    read_evals,
    read_losses,
    train,
    train_packed,
)

__all__ = [
    "Actor",
    "CheckpointMismatchError",
    "Method",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "get_method",
    "load_plugins",
    "load_run",
    "lr_factor",
    "make_config",
    "method_names",
    "pick_device",
    "plugin_methods",
    "read_checkpoint",
    "read_evals",
    "read_losses",
    "register_method",
    "train",
    "train_packed",
]
