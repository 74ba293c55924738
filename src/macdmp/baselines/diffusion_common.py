"""What the diffusion baselines (MA-Diffuser, MA-DD, MADiff) share: the backbone and diffusion
fields of their configurations, the return condition and its target, and the sampling call of
their actors (eager on the CPU, one captured CUDA graph per batch shape on a GPU).

The pieces themselves are MA-CDMP's: the temporal U-Net and its down-sampling half
(``macdmp.diffusion.backbones``), the noise schedule, the one sampler, and MA-CDMP's normaliser
and inverse dynamics (``macdmp.planner.models``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from macdmp.diffusion.backbones import check_unet_shape
from macdmp.diffusion.graphs import run_maybe_graphed
from macdmp.diffusion.sampler import (
    DEFAULT_CFG,
    SOLVERS,
    dpm_levels,
    dpm_max_steps,
    noise_draws,
    sample,
)
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule
from macdmp.methods.base import DEMO_DIFFUSION, Actor, TrainConfig
from macdmp.methods.learners import default_target


@dataclass(frozen=True)
class DiffusionConfig(TrainConfig):
    """The backbone and diffusion fields every diffusion baseline has (MA-CDMP's names and
    defaults: Diffuser's reference widths, K = 100, cosine schedule)."""

    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 5
    groups: int = 8
    n_diffusion_steps: int = 100
    beta_schedule: str = "cosine"
    # learning rate, batch and EMA of Diffuser and Decision Diffuser
    lr: float = 2e-4
    batch_size: int = 32
    ema_decay: float = 0.995
    warmup_steps: int = 1000
    ema_start: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        super().__post_init__()
        check_unet_shape(self.horizon, self.dim, self.dim_mults, self.kernel_size, self.groups)
        self.need(self.horizon >= 2, "horizon", ">= 2 (a plan needs o_t and o_t+1)")
        self.need(self.n_diffusion_steps >= 2, "n_diffusion_steps", ">= 2")
        self.need(self.beta_schedule in SCHEDULES, "beta_schedule", f"one of {SCHEDULES}")

    def need(self, ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise ValueError(f"{name}: must be {allowed} (got {getattr(self, name)!r})")

    def unet_kwargs(self) -> dict[str, Any]:
        return dict(
            dim=self.dim, dim_mults=self.dim_mults, kernel_size=self.kernel_size, groups=self.groups
        )


@dataclass(frozen=True)
class ReturnConditionedConfig(DiffusionConfig):
    """Decision Diffuser's return condition: classifier-free guidance, inverse dynamics."""

    condition_dropout: float = 0.25  # Decision Diffuser's reference
    cfg_weight: float = DEFAULT_CFG  # the actor's default of its option cfg, the weight w
    inv_hidden: int = 256
    inv_layers: int = 2
    solver: str = "dpm2"  # the actor's default solver and steps (MA-CDMP's)
    sample_steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        self.need(0.0 <= self.condition_dropout < 1.0, "condition_dropout", "in [0, 1)")
        self.need(np.isfinite(self.cfg_weight), "cfg_weight", "a finite number")
        self.need(self.inv_hidden >= 1, "inv_hidden", ">= 1")
        self.need(self.inv_layers >= 1, "inv_layers", ">= 1")
        self.need(self.solver in SOLVERS, "solver", f"one of {SOLVERS}")
        self.need(self.sample_steps >= 1, "sample_steps", ">= 1")

    @classmethod
    def demo(cls, **changes: Any) -> Any:
        """The ``demo`` preset of MA-DD and MADiff: MA-CDMP's demo size (H 8, width 16, K 20)
        and the demo schedule, with ``changes``."""
        size = {"horizon": 8, "dim": 16, "inv_hidden": 128, "n_diffusion_steps": 20}
        return cls(**{**size, "batch_size": 64, "n_epochs": 4, **DEMO_DIFFUSION, **changes})


def check_solver(
    sch: NoiseSchedule, solver: str, steps: int | None, default: int = 10
) -> int | None:
    """Validate the actor's solver and steps against the trained schedule; DDPM runs all K,
    the DPM solvers ``default`` steps (or as many as the schedule has levels for) unless told."""
    if solver not in SOLVERS:
        raise ValueError(f"solver: {solver!r} is not one of {SOLVERS}")
    if solver == "ddpm":
        if steps not in (None, sch.n_steps):
            raise ValueError(f"steps: DDPM runs all K = {sch.n_steps} steps (got {steps})")
        return None
    steps = min(default, dpm_max_steps(sch)) if steps is None else int(steps)
    dpm_levels(sch, steps)  # refuses more steps than the schedule has levels for
    return steps


class ReturnConditionedActor(Actor):
    """The options and state MA-DD's and MADiff's actors share: solver and steps, the
    classifier-free guidance weight ``cfg`` (default the config's ``cfg_weight``), the target return
    ``target`` (default the model's), and a generator reset with every episode."""

    label_name = ""
    # the `--policy RUN_DIR,k=v` options of these actors (a method's ``actor_options``)
    options = {
        "solver": ("solver", str),
        "steps": ("steps", int),
        "cfg": ("cfg", float),
        "target": ("target", float),
    }

    def __init__(
        self,
        model: Any,
        seed: int = 0,
        solver: str | None = None,
        steps: int | None = None,
        cfg: float | None = None,
        target: float | None = None,
    ) -> None:
        mc = model.cfg
        self.model = model
        self.solver = mc.solver if solver is None else solver
        self.steps = check_solver(model.schedule(), self.solver, steps, mc.sample_steps)
        self.cfg = mc.cfg_weight if cfg is None else float(cfg)
        if not np.isfinite(self.cfg):
            raise ValueError(f"cfg: must be a finite number (got {self.cfg})")
        self.target = float(model.target) if target is None else float(target)
        if not np.isfinite(self.target):
            raise ValueError(f"target: must be a finite return in ms (got {self.target})")
        self.seed = int(seed)
        self.generator = torch.Generator(device=model.device).manual_seed(self.seed)
        k = mc.n_diffusion_steps if self.solver == "ddpm" else self.steps
        self.label = f"{self.label_name} ({self.solver} {k}, w {self.cfg:g})"

    def reset(self, n_agents: int) -> None:
        self.generator.manual_seed(self.seed)


_GRAPHS: dict[tuple, Any] = {}
CUDA_GRAPHS = True  # False: the actors sample eagerly on a GPU too (tests compare the two)


def sample_plans(
    key: tuple,
    build: Callable[..., torch.Tensor],
    sch: NoiseSchedule,
    shape: tuple[int, ...],
    solver: str,
    inputs: list[torch.Tensor],
    generator: torch.Generator | None,
    owner: object | None = None,
) -> torch.Tensor:
    """Draw the solver's noise from ``generator`` and run ``build(*inputs, noise)`` (a call of
    :func:`sample` with ``noise=``), replayed from a CUDA graph per ``key`` on a GPU; ``owner``:
    the model whose id ``key`` holds (its graphs go with it, ``graphs.forget_with``)."""
    noise = torch.randn(
        (noise_draws(solver, sch.n_steps), *shape), generator=generator, device=sch.device
    )
    return run_maybe_graphed(_GRAPHS, key, build, [*inputs, noise], CUDA_GRAPHS, owner=owner)


__all__ = [
    "DiffusionConfig",
    "ReturnConditionedActor",
    "ReturnConditionedConfig",
    "check_solver",
    "default_target",
    "sample",
    "sample_plans",
]
