"""The receding-horizon MA-CDMP agent (paper Algorithm 2) as a policy of the common interface.

Every frame, each agent receives its 1-hop neighbours' current observations (their mean is the
only message), samples a plan of H observations whose first entry is pinned to its own current
observation and that mean, takes a_t = f_phi(o_t, planned o_t+1), and replans the next frame.
All agents of all networks being evaluated are planned in one batched call (`act_agents`).

    --policy macdmp:RUN_DIR[,solver=ddpm|dpm1|dpm2][,steps=N][,guide=ZETA][,candidates=C]
                           [,device=cpu|cuda]

(README.md, "Policies for `--policy`", explains each option and its default.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from macdmp.planner.checkpoint import CHECKPOINT_NAME, load_run
from macdmp.planner.plan import plan
from macdmp.policies.allocators import Policy, PolicyError

SOLVER_DEFAULT_STEPS = {"ddpm": None, "dpm1": 10, "dpm2": 10}


class PlannerPolicy(Policy):
    """MA-CDMP (or MA-CDMP w/o MF) from a training run folder."""

    name = "macdmp"
    decentralized = True

    def __init__(
        self,
        run_dir: str | Path,
        solver: str = "dpm2",
        steps: int | None = None,
        guidance_scale: float = 0.1,
        n_candidates: int = 1,
        seed: int = 0,
        device: str | None = None,
        threads: int = 1,
    ):
        run = Path(run_dir)
        if not (run / CHECKPOINT_NAME).is_file():
            raise FileNotFoundError(
                f"macdmp: {run} is not a training run folder (no {CHECKPOINT_NAME}); "
                "train one with `macdmp train --data FILE --out RUN_DIR`"
            )
        if solver not in SOLVER_DEFAULT_STEPS:
            raise PolicyError(f"macdmp solver: {solver!r} not one of {tuple(SOLVER_DEFAULT_STEPS)}")
        if n_candidates < 1:
            raise PolicyError(f"macdmp candidates: must be >= 1, got {n_candidates}")
        if not np.isfinite(guidance_scale):
            raise PolicyError(f"macdmp guide: must be a finite number, got {guidance_scale}")
        self.models = load_run(run, device)
        self.run_dir = run
        self.solver = solver
        self.steps = SOLVER_DEFAULT_STEPS[solver] if steps is None else int(steps)
        self.guidance_scale = float(guidance_scale)
        self.n_candidates = int(n_candidates)
        self.seed = int(seed)
        self._device = self.models.normalizer.obs_mean.device
        if self._device.type == "cpu":
            # One frame's plan is a few hundred small convolutions: intra-op threads gain little
            # and, when another process holds a core, their barriers stall each op (measured:
            # 42 ms -> 4.4 s per frame on the 2-core machine with a busy neighbour).
            if threads < 1:
                raise PolicyError(f"macdmp threads: must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.generator = torch.Generator(device=self._device)
        base = "MA-CDMP" if self.models.cfg.use_mf else "MA-CDMP w/o MF"
        k = self.models.cfg.n_diffusion_steps if solver == "ddpm" else self.steps
        extras = "" if self.guidance_scale == 0.1 else f", guide {self.guidance_scale:g}"
        extras += "" if self.n_candidates == 1 else f", {self.n_candidates} candidates"
        self.label = f"{base} ({solver} {k}{extras})"

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> PlannerPolicy:
        """From `RUN_DIR[,key=value...]` with keys solver, steps, guide, candidates, device.

        (`threads` is a constructor argument only; the spec does not take it.)
        """
        run, *opts = spec.split(",")
        kinds = {
            "solver": ("solver", str),
            "steps": ("steps", int),
            "guide": ("guidance_scale", float),
            "candidates": ("n_candidates", int),
            "device": ("device", str),
        }
        kwargs: dict = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key not in kinds or not value:
                raise PolicyError(
                    f"macdmp: option {opt!r} not understood; use key=value with keys "
                    f"{', '.join(kinds)}"
                )
            name, kind = kinds[key]
            try:
                kwargs[name] = kind(value)
            except ValueError:
                raise PolicyError(
                    f"macdmp {key}: {value!r} is not a valid {kind.__name__}"
                ) from None
        return cls(run, seed=seed, **kwargs)

    def reset(self, sim) -> None:
        super().reset(sim)
        if float(sim.cfg.rbs) != self.models.rbs:
            raise PolicyError(
                f"macdmp: the run was trained with M x L = {self.models.rbs:g} RBs per frame but "
                f"scenario {sim.cfg.name!r} has {sim.cfg.rbs}; evaluate it on a matching scenario"
            )
        self.generator.manual_seed(self.seed)

    def act_agents(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        actions, _ = plan(
            self.models,
            obs,
            mean_field if self.models.cfg.use_mf else None,
            solver=self.solver,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            n_candidates=self.n_candidates,
            generator=self.generator,
        )
        return actions

    def describe(self) -> dict:
        return {
            "name": self.name,
            "run": str(self.run_dir),
            "solver": self.solver,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "n_candidates": self.n_candidates,
            "use_mf": self.models.cfg.use_mf,
        }
