"""The receding-horizon MA-CDMP agent (paper Algorithm 2) as an actor of the method interface.

Every frame, each agent receives its 1-hop neighbours' current observations (their mean is the
only message), samples a plan of H observations whose first entry is pinned to its own current
observation and that mean, takes a_t = f_phi(o_t, planned o_t+1), and replans the next frame.
All agents given to one call are planned in one batch. Options, as in
``--policy RUN_DIR,solver=dpm2,steps=10,guide=0.1,candidates=1``:

    solver       ddpm | dpm1 | dpm2 (default dpm2, second-order DPM-Solver++)
    steps        solver steps (default 10, or fewer where K allows fewer; DDPM runs all K)
    guide        classifier guidance scale zeta (default 0.1)
    candidates   plans sampled per agent, the one the classifier values most is kept (default 1)
    warm         warm start: from the second frame of an episode each agent starts from its
                 previous plan shifted by one frame, re-noised to the solver level nearest to
                 warm x K, and denoises only from there (default 0: every frame from scratch,
                 as the paper's Algorithm 2; 0.3 is CleanDiffuser's level)
    guide_sigma  guide only at solver levels with sigma_k >= this (default 0: at every level)
    bf16         1: the backbones under bf16 autocast (default 0)
    compile      1: the backbones through torch.compile (default 0; inside the CUDA graph)
    backend      torch | onnx (the backbones exported to ONNX Runtime, CPU only; default torch)

plus the options every run folder takes (device, threads, weights: ``macdmp.methods.policy``);
README.md, "Policies for `--policy`", explains each with its default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from macdmp.diffusion.sampler import SOLVERS, dpm_levels, dpm_max_steps, dpm_warm_level
from macdmp.methods.base import Actor
from macdmp.planner.plan import Speed, plan_batch

# `models` below is a macdmp.planner.models.PlannerModels, annotated as a plain Module: that
# module builds actors from this one, so importing it here would make the two import each other.

SOLVER_DEFAULT_STEPS = {"ddpm": None, "dpm1": 10, "dpm2": 10}


class PlannerActor(Actor):
    """MA-CDMP (or MA-CDMP w/o MF) planning for a batch of agents."""

    def __init__(
        self,
        models: torch.nn.Module,
        seed: int = 0,
        solver: str = "dpm2",
        steps: int | None = None,
        guidance_scale: float = 0.1,
        n_candidates: int = 1,
        warm: float = 0.0,
        guide_sigma: float = 0.0,
        bf16: bool = False,
        compile: bool = False,
        backend: str = "torch",
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"solver: {solver!r} is not one of {SOLVERS}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps: must be >= 1 (got {steps})")
        if solver == "ddpm" and steps not in (None, models.cfg.n_diffusion_steps):
            raise ValueError(
                f"steps: DDPM runs all K = {models.cfg.n_diffusion_steps} steps (got {steps})"
            )
        if n_candidates < 1:
            raise ValueError(f"candidates: must be >= 1 (got {n_candidates})")
        if not np.isfinite(guidance_scale):
            raise ValueError(f"guide: must be a finite number (got {guidance_scale})")
        if solver != "ddpm":
            sch = models.schedule("cpu")
            if steps is None:
                steps = min(SOLVER_DEFAULT_STEPS[solver], dpm_max_steps(sch))
            dpm_levels(sch, steps)  # refuses more steps than the schedule has levels for
        if warm != 0.0:
            if solver == "ddpm":
                raise ValueError("warm: warm starts need a DPM solver (dpm1 or dpm2)")
            dpm_warm_level(models.schedule("cpu"), steps, warm)  # refuses a bad fraction
        if not guide_sigma >= 0.0:
            raise ValueError(f"guide_sigma: must be >= 0 (got {guide_sigma})")
        self.speed = Speed(compile=bool(compile), bf16=bool(bf16), backend=backend)
        if backend == "onnx" and models.normalizer.obs_mean.device.type != "cpu":
            raise ValueError("backend: 'onnx' runs on the CPU; add device=cpu")
        self.warm = float(warm)
        self.guide_sigma = float(guide_sigma)
        self._prev = None  # each agent's last plan in model space (A, H, C), for warm starts
        self.models = models
        self.solver = solver
        self.steps = steps
        self.guidance_scale = float(guidance_scale)
        self.n_candidates = int(n_candidates)
        self.seed = int(seed)
        self.generator = torch.Generator(device=models.normalizer.obs_mean.device)
        self.generator.manual_seed(self.seed)
        base = "MA-CDMP" if models.cfg.use_mf else "MA-CDMP w/o MF"
        k = models.cfg.n_diffusion_steps if solver == "ddpm" else self.steps
        extras = "" if self.guidance_scale == 0.1 else f", guide {self.guidance_scale:g}"
        extras += "" if self.n_candidates == 1 else f", {self.n_candidates} candidates"
        extras += "" if self.warm == 0.0 else f", warm {self.warm:g}"
        extras += "" if self.guide_sigma == 0.0 else f", guide sigma >= {self.guide_sigma:g}"
        tags = (("bf16", bf16), ("compiled", compile), ("onnx", backend == "onnx"))
        extras += "".join(f", {n}" for n, on in tags if on)
        reward = getattr(models.cfg, "reward", "delay")
        extras += "" if reward == "delay" else f", reward {reward}"
        self.label = f"{base} ({solver} {k}{extras})"

    def reset(self, n_agents: int) -> None:
        self.generator.manual_seed(self.seed)
        self._prev = None  # a new episode: the first frame plans from scratch

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        # Agents are the rows of the batch, the same every frame of an episode; a batch of
        # another size (agents came or went) has no previous plans to start from.
        prev = self._prev
        if prev is not None and prev.shape[0] != len(obs):
            prev = None
        actions, z = plan_batch(
            self.models,
            obs,
            mean_field if self.models.cfg.use_mf else None,
            solver=self.solver,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            n_candidates=self.n_candidates,
            generator=self.generator,
            warm_from=prev if self.warm else None,
            warm=self.warm or 0.3,
            guide_min_sigma=self.guide_sigma,
            speed=self.speed,
        )
        if self.warm:
            self._prev = z
        return actions.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "solver": self.solver,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "n_candidates": self.n_candidates,
            "warm": self.warm,
            "guide_sigma": self.guide_sigma,
            "bf16": self.speed.bf16,
            "compile": self.speed.compile,
            "backend": self.speed.backend,
            "use_mf": self.models.cfg.use_mf,
            "reward": getattr(self.models.cfg, "reward", "delay"),
        }
