"""The receding-horizon MA-CDMP agent (paper Algorithm 2) as an actor of the method interface.

Every frame, each agent receives its 1-hop neighbours' current observations (their mean is the
only message), samples a plan of H observations whose first entry is pinned to its own current
observation and that mean (with ``history`` = k, whose first k + 1 entries are pinned to its
last k observations and mean fields, which the actor keeps, and the current ones), takes
a_t = f_phi(o_t, planned o_t+1), and replans the next frame.
All agents given to one call are planned in one batch. Options, as in
``--policy RUN_DIR,solver=dpm2,steps=10,guide=0.1,candidates=1``:

    solver       ddpm | dpm1 | dpm2 (default dpm2, second-order DPM-Solver++)
    steps        solver steps (default 10, or fewer where K allows fewer; DDPM runs all K)
    guidance     classifier | cfg (default: what the model was trained for, its config's
                 ``guidance``; cfg needs a model trained with guidance=cfg, and such a model
                 runs guidance=classifier with its unconditional noise model)
    guide        classifier guidance's scale zeta (default 0.1, the paper's; guidance=classifier)
    cfg          classifier-free guidance's weight w, eps_u + w (eps_c - eps_u) (default 1.2,
                 Decision Diffuser's; 0 unconditional, 1 conditional alone; guidance=cfg)
    target       cfg: the return every agent asks for, raw units (default the data's 90%
                 quantile of horizon returns, ``ret_best``, as MA-DD)
    candidates   plans sampled per agent, the one the classifier values most is kept (default 1)
    warm         warm start: from the second frame of an episode each agent starts from its
                 previous plan shifted by one frame, re-noised to the solver level nearest to
                 warm x K, and denoises only from there; 0: every frame from scratch, as the
                 paper's Algorithm 2; 0.3 is CleanDiffuser's level (default: the run's config
                 field ``warm``, 0 except in the ``paper-steer`` preset; 0 with solver=ddpm)
    guide_sigma  guide only at solver levels with sigma_k >= this (default 0: at every level)
    bf16         1: the backbones under bf16 autocast (default 0)
    compile      1: the backbones through torch.compile (default 0; inside the CUDA graph)
    backend      torch | onnx | fused | openvino (onnx: the backbones exported to ONNX Runtime;
                 fused: the whole planning call as one ONNX graph, one ONNX Runtime call per
                 frame, DPM solvers only; openvino: that graph run by OpenVINO; all three CPU
                 only; default torch)

plus the options every run folder takes (device, threads, weights, checkpoint, label, boost:
``macdmp.methods.policy``); docs/guide/evaluating.md, "Policies for `--policy`", explains each
with its default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from macdmp.diffusion.sampler import dpm_levels, dpm_max_steps, dpm_warm_level
from macdmp.methods.base import Actor
from macdmp.planner.plan import DEFAULT_CFG, DEFAULT_GUIDE, Speed, check_options, plan_batch

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
        guide: float | None = None,
        cfg: float | None = None,
        n_candidates: int = 1,
        warm: float | None = None,
        guide_sigma: float = 0.0,
        bf16: bool = False,
        compile: bool = False,
        backend: str = "torch",
        guidance: str | None = None,
        target: float | None = None,
    ) -> None:
        if warm is None:  # the run's default; DDPM has no warm start, so none there
            warm = 0.0 if solver == "ddpm" else float(getattr(models.cfg, "warm", 0.0))
        guidance = check_options(
            models, solver, steps, guidance, n_candidates, guide, cfg, target, backend, warm
        )
        if guide is not None and guidance != "classifier":
            raise ValueError(
                "guide: the scale of classifier guidance; this actor plans with classifier-free "
                "guidance, whose weight is the option cfg"
            )
        if cfg is not None and guidance != "cfg":
            raise ValueError(
                "cfg: the weight of classifier-free guidance; this actor plans with classifier "
                "guidance, whose scale is the option guide"
            )
        guide = DEFAULT_GUIDE if guide is None else guide
        cfg = DEFAULT_CFG if cfg is None else cfg
        if solver != "ddpm":
            sch = models.schedule("cpu")
            if steps is None:
                steps = min(SOLVER_DEFAULT_STEPS[solver], dpm_max_steps(sch))
            dpm_levels(sch, steps)  # refuses more steps than the schedule has levels for
            if warm != 0.0:
                dpm_warm_level(sch, steps, warm)  # refuses a bad fraction
        if not guide_sigma >= 0.0:
            raise ValueError(f"guide_sigma: must be >= 0 (got {guide_sigma})")
        self.speed = Speed(compile=bool(compile), bf16=bool(bf16), backend=backend)
        self.guidance = guidance
        self.target = None if target is None else float(target)
        self.warm = float(warm)
        self.guide_sigma = float(guide_sigma)
        self._prev = None  # each agent's last plan in model space (A, H, C), for warm starts
        # with history k > 0: each agent's last k observations and mean fields (A, k, 4), raw
        self._past: tuple[torch.Tensor, torch.Tensor] | None = None
        self.models = models
        self.solver = solver
        self.steps = steps
        self.guide = float(guide)  # classifier guidance's scale (guidance=classifier)
        self.cfg = float(cfg)  # classifier-free guidance's weight (guidance=cfg)
        self.n_candidates = int(n_candidates)
        self.seed = int(seed)
        self.generator = torch.Generator(device=models.normalizer.obs_mean.device)
        self.generator.manual_seed(self.seed)
        base = "MA-CDMP" if models.cfg.use_mf else "MA-CDMP w/o MF"
        k = models.cfg.n_diffusion_steps if solver == "ddpm" else self.steps
        extras = "" if guidance == "classifier" else ", cfg"
        extras += "" if target is None else f" target {self.target:g}"
        if guidance == "classifier" and self.guide != DEFAULT_GUIDE:
            extras += f", guide {self.guide:g}"
        if guidance == "cfg" and self.cfg != DEFAULT_CFG:
            extras += f", cfg {self.cfg:g}"
        extras += "" if self.n_candidates == 1 else f", {self.n_candidates} candidates"
        extras += "" if self.warm == 0.0 else f", warm {self.warm:g}"
        extras += "" if self.guide_sigma == 0.0 else f", guide sigma >= {self.guide_sigma:g}"
        tags = (("bf16", bf16), ("compiled", compile), ("onnx", backend == "onnx"))
        tags += (("onnx fused", backend == "fused"), ("openvino fused", backend == "openvino"))
        extras += "".join(f", {n}" for n, on in tags if on)
        reward = getattr(models.cfg, "reward", "delay")
        extras += "" if reward == "delay" else f", reward {reward}"
        history = getattr(models.cfg, "history", 0)
        extras += "" if not history else f", history {history}"
        self.label = f"{base} ({solver} {k}{extras})"

    def plan_target(self) -> float | None:
        """The return the plans are conditioned on (raw units; None with classifier guidance)."""
        if self.guidance != "cfg":
            return None
        return self.models.default_target if self.target is None else self.target

    def reset(self, n_agents: int) -> None:
        self.generator.manual_seed(self.seed)
        self._prev = None  # a new episode: the first frame plans from scratch
        self._past = None  # and knows no frame before its first

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        # Agents are the rows of the batch, the same every frame of an episode; a batch of
        # another size (agents came or went) has no previous plans to start from.
        prev = self._prev
        if prev is not None and prev.shape[0] != len(obs):
            prev = None
        k = getattr(self.models.cfg, "history", 0)
        past = self._past  # none at an episode's start, nor for a batch of another size
        if past is not None and len(past[0]) != len(obs):
            past = None
        actions, z = plan_batch(
            self.models,
            obs,
            mean_field if self.models.cfg.use_mf else None,
            solver=self.solver,
            steps=self.steps,
            guide=self.guide,
            cfg=self.cfg,
            n_candidates=self.n_candidates,
            generator=self.generator,
            warm_from=prev if self.warm else None,
            warm=self.warm or 0.3,
            guide_min_sigma=self.guide_sigma,
            speed=self.speed,
            guidance=self.guidance,
            target=self.target,
            past=None if past is None else past[0],
            past_mf=None if past is None else past[1],
        )
        if self.warm:
            self._prev = z
        if k:  # the frames the next plan pins before its own: these k, moved on by one
            dev = z.device
            o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=dev)[:, None]
            m = o if mean_field is None else torch.as_tensor(
                np.asarray(mean_field), dtype=torch.float32, device=dev
            )[:, None]  # fmt: skip
            if past is None:  # the episode's first frame: nothing before it is known
                past = (o.expand(-1, k, -1), m.expand(-1, k, -1))
            self._past = (torch.cat([past[0], o], 1)[:, 1:], torch.cat([past[1], m], 1)[:, 1:])
        return actions.double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "solver": self.solver,
            "steps": self.steps,
            "guidance": self.guidance,
            "guide": self.guide if self.guidance == "classifier" else None,
            "cfg": self.cfg if self.guidance == "cfg" else None,
            "target": self.plan_target(),
            "n_candidates": self.n_candidates,
            "warm": self.warm,
            "guide_sigma": self.guide_sigma,
            "bf16": self.speed.bf16,
            "compile": self.speed.compile,
            "backend": self.speed.backend,
            "use_mf": self.models.cfg.use_mf,
            "reward": getattr(self.models.cfg, "reward", "delay"),
            "history": getattr(self.models.cfg, "history", 0),
        }
