"""Batched planning for all agents of a frame: one diffusion batch, one action per agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from macdmp.diffusion.sampler import Conditioning, dpm_warm_level, noise_draws, sample
from macdmp.diffusion.schedule import NoiseSchedule

# `models` below is a macdmp.planner.models.PlannerModels, annotated as a plain Module: that
# module builds actors from this one, so importing it here would make the two import each other.

BACKENDS = ("torch", "onnx", "fused")
# how plans are steered towards a high return (PlannerConfig.guidance, the actor's `guidance`)
GUIDANCE = ("classifier", "cfg")

_SCHEDULES: dict[tuple[int, str, str], NoiseSchedule] = {}


def _schedule(models: torch.nn.Module, device: torch.device) -> NoiseSchedule:
    key = (models.cfg.n_diffusion_steps, models.cfg.beta_schedule, str(device))
    if key not in _SCHEDULES:
        _SCHEDULES[key] = models.schedule(device)
    return _SCHEDULES[key]


@dataclass(frozen=True)
class Speed:
    """How the backbones run; none of it changes what is sampled beyond rounding (bf16).

    ``compile``: the noise model and classifier through torch.compile (inside the CUDA graph on
    a GPU). ``bf16``: their forward (and the classifier's backward) under bf16 autocast, the
    solver's arithmetic in float32. ``backend``: "torch", or "onnx" for the backbones exported
    to ONNX and run by ONNX Runtime on the CPU (one export per batch shape; macdmp.planner.export),
    or "fused" for the whole planning call (every solver step, guidance, inverse dynamics) as
    one ONNX graph, one ONNX Runtime call per decision (one export per setting and batch shape;
    DPM solvers only).
    """

    compile: bool = False
    bf16: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {BACKENDS} (got {self.backend!r})")
        if self.backend in ("onnx", "fused") and (self.compile or self.bf16):
            raise ValueError(
                f"backend: {self.backend!r} runs float32 ONNX Runtime; drop compile and bf16"
            )


# Keyed by id(models); the values hold the models too, so that an id is never reused.
_COMPILED: dict[int, tuple[torch.nn.Module, ...]] = {}
_EXPORTED: dict[tuple, tuple[torch.nn.Module, object]] = {}


def _autocast(fn: Callable, device: torch.device) -> Callable:
    def run(x: torch.Tensor, idx: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return fn(x, idx, *cond).float()

    return run


def _backbones(
    models: torch.nn.Module, speed: Speed, shape: tuple[int, ...], device: torch.device
) -> dict[str, Callable]:
    """The sampler's model arguments (eps_model, value, value_grad) for ``speed``."""
    if speed.backend == "onnx":
        if device.type != "cpu":
            raise ValueError("backend: 'onnx' runs on the CPU; use device=cpu")
        from macdmp.planner.export import OnnxBackbones

        key = (id(models), tuple(shape), torch.get_num_threads())
        if key not in _EXPORTED:
            _EXPORTED[key] = (models, OnnxBackbones(models, shape, threads=torch.get_num_threads()))
        ox = _EXPORTED[key][1]
        return {"eps_model": ox.eps, "value": None, "value_grad": ox.value_grad}  # type: ignore[attr-defined]
    eps, cls = models.eps, models.classifier
    if speed.compile:
        if id(models) not in _COMPILED:
            compiled = (torch.compile(models.eps), torch.compile(models.classifier))
            _COMPILED[id(models)] = (models, *compiled)
        eps, cls = _COMPILED[id(models)][1:]
    if speed.bf16:
        eps, cls = _autocast(eps, device), _autocast(cls, device)
    return {"eps_model": eps, "value": cls, "value_grad": None}


class _GraphedSampler:
    """One planning call's whole sampling loop captured in a CUDA graph, for one batch shape.

    A plan is hundreds of small kernels per solver step; launched one by one from Python they
    cost about 8x their GPU time (docs/models.md). Replaying a captured graph launches them all
    at once. Inputs (first observations, Gaussian draws, a warm start's previous plans, the
    return condition of classifier-free guidance) go through static buffers. ``cond_dim`` > 0:
    the noise model takes a (B, cond_dim) condition, combined with weight ``cfg_weight``.
    """

    def __init__(
        self, nets, sch, shape, solver, steps, scale, clip_x0, start, min_sigma,
        cond_dim: int = 0, cfg_weight: float = 1.0,
    ) -> None:  # fmt: skip
        dev = sch.device
        self.first = torch.zeros(shape[0], shape[2], device=dev)
        self.noise = torch.zeros(noise_draws(solver, sch.n_steps), *shape, device=dev)
        self.x_start = None if start is None else torch.zeros(shape, device=dev)
        self.condition = torch.zeros(shape[0], cond_dim, device=dev) if cond_dim else None

        def run() -> torch.Tensor:
            return sample(
                nets["eps_model"],
                sch,
                shape,
                solver=solver,
                steps=steps,
                cond=Conditioning.first_step(self.first, shape[1]),
                value=nets["value"],
                guidance_scale=scale,
                clip_x0=clip_x0,
                noise=self.noise,
                start_level=start,
                x_start=self.x_start,
                guide_min_sigma=min_sigma,
                condition=self.condition,
                cfg_weight=cfg_weight,
            )

        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: allocator pools, cuDNN choices, compilation
                run()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run()

    def __call__(
        self,
        first: torch.Tensor,
        generator: torch.Generator | None,
        x_start: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.first.copy_(first)
        self.noise.normal_(generator=generator)
        if self.x_start is not None:
            self.x_start.copy_(x_start)  # type: ignore[arg-type]
        if self.condition is not None:
            self.condition.copy_(condition)  # type: ignore[arg-type]
        self.graph.replay()
        return self.out.clone()


_GRAPHS: dict[tuple, _GraphedSampler] = {}


def shift_plans(z: torch.Tensor) -> torch.Tensor:
    """Plans (B, H, C) moved one frame on: step t+1 becomes step t, the last step repeated."""
    return torch.cat([z[:, 1:], z[:, -1:]], dim=1)


def _guidance_weights(
    models: torch.nn.Module, guidance: str, guidance_scale: float, target: float | None
) -> tuple[float | None, float, float]:
    """(the target return y or None, the CFG weight w, the classifier guidance scale)."""
    # Classifier-free guidance: every sample asks for the target return, weight w = scale
    # and no classifier gradient; classifier guidance on a cfg-trained model: w = 0 (the
    # unconditional noise model, one call per step) with the classifier's gradient.
    y, cfg_weight, scale = None, 1.0, float(guidance_scale)
    if models.cfg.cond_dim:
        y = models.default_target if target is None else float(target)
        if not np.isfinite(y):
            raise ValueError(f"target: must be a finite return (got {y})")
        if guidance == "cfg":
            cfg_weight, scale = scale, 0.0
        else:
            cfg_weight = 0.0
    return y, cfg_weight, scale


class _FusedRuns:
    """The fused planners (backend "fused") of one model, batch and solver setting, one per
    guidance setting: each the whole planning call as one ONNX Runtime session."""

    def __init__(self, models, a, n_candidates, solver, steps, scale, clip_x0, start) -> None:  # type: ignore[no-untyped-def]
        self.args = (models, a, n_candidates, solver, steps, scale, clip_x0, start)
        self.runs: dict[tuple, object] = {}

    def _build(self, guide_min_sigma: float, y: float | None, cfg_weight: float):  # type: ignore[no-untyped-def]
        from macdmp.planner.export import FusedPlanner

        models, a, n_candidates, solver, steps, scale, clip_x0, start = self.args
        cfg = models.cfg
        h, c = cfg.horizon, cfg.channels
        shape = (a * n_candidates, h, c)
        sch = _schedule(models, torch.device("cpu"))

        def plan_fn(obs, noise, mf=None, prev=None):  # type: ignore[no-untyped-def]
            # plan_batch's eager planning call, as one function of its inputs
            first = models.to_model_space(obs[:, None], None if mf is None else mf[:, None])
            first = first[:, 0].repeat_interleave(n_candidates, dim=0)
            x_start = None
            if prev is not None:
                x_start = shift_plans(prev).repeat_interleave(n_candidates, dim=0)
            condition = None
            if y is not None:
                condition = models.normalizer.ret(torch.full((shape[0], 1), y))
            z = sample(
                models.eps,
                sch,
                shape,
                solver=solver,
                steps=steps,
                cond=Conditioning.first_step(first, h),
                value=models.classifier,
                guidance_scale=scale,
                clip_x0=clip_x0,
                noise=noise[None],
                start_level=start,
                x_start=x_start,
                guide_min_sigma=guide_min_sigma,
                condition=condition,
                cfg_weight=cfg_weight,
            )
            if n_candidates > 1:
                k1 = torch.zeros(z.shape[0], dtype=torch.long)
                best = models.classifier(z, k1).view(a, n_candidates).argmax(dim=1)
                z = z.view(a, n_candidates, h, -1)[torch.arange(a), best]
            own, _ = models.from_model_space(z)
            return models.action_rbs(obs, own[:, 1]), z

        examples = {"obs": torch.zeros(a, cfg.obs_dim), "noise": torch.zeros(shape)}
        if cfg.use_mf:
            examples["mf"] = torch.zeros(a, cfg.obs_dim)
        if start is not None:
            examples["prev"] = torch.zeros(a, h, c)
        return FusedPlanner(plan_fn, examples, torch.get_num_threads())

    def __call__(self, key, o, mf, warm_from, generator):  # type: ignore[no-untyped-def]
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = self._build(*key)
        models, a, n_candidates = self.args[:3]
        cfg = models.cfg
        noise = torch.randn((a * n_candidates, cfg.horizon, cfg.channels), generator=generator)
        feed = {"obs": o.numpy(), "noise": noise.numpy()}
        if mf is not None:
            feed["mf"] = mf.numpy()
        if warm_from is not None:
            feed["prev"] = warm_from.detach().cpu().numpy()
        actions, z = run(**feed)  # type: ignore[operator]
        return torch.from_numpy(actions), torch.from_numpy(z)


# Keyed by id(models) and the setting; the values hold the models too (an id is never reused).
_FUSED: dict[tuple, tuple[torch.nn.Module, _FusedRuns]] = {}


def _fused(models, a, n_candidates, solver, steps, scale, clip_x0, start) -> _FusedRuns:  # type: ignore[no-untyped-def]
    key = (id(models), a, n_candidates, solver, steps, scale, clip_x0, start)
    key += (torch.get_num_threads(),)
    if key not in _FUSED:
        _FUSED[key] = (models, _FusedRuns(models, *key[1:-1]))
    return _FUSED[key][1]


def plan_batch(
    models: torch.nn.Module,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    solver: str = "dpm2",
    steps: int | None = 10,
    guidance_scale: float = 0.1,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: float | None = 5.0,
    cuda_graph: bool | None = None,
    *,
    warm_from: torch.Tensor | None = None,
    warm: float = 0.3,
    guide_min_sigma: float = 0.0,
    speed: Speed | None = None,
    guidance: str | None = None,
    target: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`plan` on tensors: (actions (A,) in RBs, chosen plans (A, H, C) in model space).

    ``guidance`` (default: the model's ``cfg.guidance``): "classifier", the paper's classifier
    guidance with scale ``guidance_scale`` (a model trained for "cfg" then runs its noise model
    unconditioned); or "cfg", classifier-free guidance towards the return ``target`` (raw
    units; default the model's ``default_target``, the data's 90% quantile) with weight
    w = ``guidance_scale`` (needs a model trained with ``guidance="cfg"``).

    ``warm_from``: each agent's previous plan in model space (what this returned last frame);
    it is shifted one frame on (:func:`shift_plans`), re-noised to the solver level nearest to
    ``warm`` x K and denoised from there (DPM solvers only). None plans from scratch.
    """
    if n_candidates < 1:
        raise ValueError(f"n_candidates: must be >= 1 (got {n_candidates})")
    speed = speed or Speed()
    cfg = models.cfg
    guidance = cfg.guidance if guidance is None else guidance
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance: must be one of {GUIDANCE} (got {guidance!r})")
    if guidance == "cfg" and not cfg.cond_dim:
        raise ValueError("guidance: 'cfg' needs a model trained with guidance=cfg")
    device = models.normalizer.obs_mean.device
    o = torch.as_tensor(np.asarray(obs) if not torch.is_tensor(obs) else obs, device=device)
    o = o.to(torch.float32)
    if o.dim() != 2 or o.shape[1] != cfg.obs_dim:
        raise ValueError(f"obs: expected shape (A, {cfg.obs_dim}) (got {tuple(o.shape)})")
    a = o.shape[0]
    mf = None
    if cfg.use_mf:
        if mean_field is None:
            raise ValueError("mean_field: this model uses the mean field; pass (A, 4) values")
        mf = torch.as_tensor(np.asarray(mean_field), dtype=torch.float32, device=device)
        if mf.shape != o.shape:
            raise ValueError(f"mean_field: expected shape {tuple(o.shape)} (got {tuple(mf.shape)})")
    if solver == "ddpm" and steps is not None and steps != cfg.n_diffusion_steps:
        raise ValueError(f"steps: DDPM runs all K = {cfg.n_diffusion_steps} steps (got {steps})")
    h = cfg.horizon
    shape = (a * n_candidates, h, cfg.channels)
    sch = _schedule(models, device)
    start = x_start = None
    if warm_from is not None:
        if solver == "ddpm":
            raise ValueError("warm: warm starts need a DPM solver ('dpm1' or 'dpm2')")
        if tuple(warm_from.shape) != (a, h, cfg.channels):
            raise ValueError(
                f"warm_from: expected shape {(a, h, cfg.channels)} (got {tuple(warm_from.shape)})"
            )
        start = dpm_warm_level(sch, steps or cfg.n_diffusion_steps, warm)
    y, cfg_weight, scale = _guidance_weights(models, guidance, guidance_scale, target)
    if speed.backend == "fused":
        if device.type != "cpu":
            raise ValueError("backend: 'fused' runs on the CPU; use device=cpu")
        if solver == "ddpm":
            raise ValueError("backend: 'fused' needs a DPM solver ('dpm1' or 'dpm2')")
        if scale != 0.0:
            raise ValueError(
                "backend: 'fused' takes classifier-free guidance or none, not the classifier's "
                "gradient (guidance=classifier with guide != 0); use backend=onnx"
            )
        run = _fused(models, a, n_candidates, solver, steps, scale, clip_x0, start)
        run_key = (float(guide_min_sigma), y, cfg_weight)
        return run(run_key, o, mf, warm_from, generator)
    with torch.inference_mode():
        first = models.to_model_space(o[:, None], None if mf is None else mf[:, None])[:, 0]
        if warm_from is not None:
            x_start = shift_plans(warm_from)
            x_start = x_start.repeat_interleave(n_candidates, dim=0)
        first = first.repeat_interleave(n_candidates, dim=0)
        condition = None
        if y is not None:
            condition = models.normalizer.ret(torch.full((shape[0], 1), y, device=device))
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    nets = _backbones(models, speed, shape, device)
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph: needs the models on a CUDA device")
        key = (id(models), shape, solver, steps, scale, clip_x0, start)
        key += (float(guide_min_sigma), speed, cfg_weight)
        if key not in _GRAPHS:
            _GRAPHS[key] = _GraphedSampler(
                nets, sch, shape, solver, steps, scale, clip_x0, start, guide_min_sigma,
                cfg.cond_dim, cfg_weight,
            )  # fmt: skip
        z = _GRAPHS[key](first, generator, x_start, condition)
    else:
        z = sample(
            nets["eps_model"],
            sch,
            shape,
            solver=solver,
            steps=steps,
            cond=Conditioning.first_step(first.clone(), h),
            value=nets["value"],
            guidance_scale=scale,
            generator=generator,
            clip_x0=clip_x0,
            start_level=start,
            x_start=x_start,
            guide_min_sigma=guide_min_sigma,
            value_grad=nets["value_grad"],
            condition=condition,
            cfg_weight=cfg_weight,
        )
    with torch.inference_mode():
        if n_candidates > 1:
            k1 = torch.zeros(z.shape[0], dtype=torch.long, device=device)
            score = models.classifier(z, k1).view(a, n_candidates)
            best = score.argmax(dim=1)
            z = z.view(a, n_candidates, h, -1)[torch.arange(a, device=device), best]
        own, _ = models.from_model_space(z)
        # The pinned first entry is the current observation exactly; act on it and o_t+1.
        actions = models.action_rbs(o, own[:, 1])
    return actions, z


def plan(
    models: torch.nn.Module,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    solver: str = "dpm2",
    steps: int | None = 10,
    guidance_scale: float = 0.1,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: float | None = 5.0,
    cuda_graph: bool | None = None,
    **fast: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Plan for A agents at once from their observations (A, 4) and mean fields (A, 4).

    Returns ``actions`` (A,) float64 demands in RBs in [0, M x L] and ``plans`` (A, H, C) in raw
    units (own observations, then mean-field ones when the model uses them). With
    ``n_candidates`` > 1 each agent samples that many plans and keeps the one the classifier
    values most. A model trained with ``use_mf=False`` ignores ``mean_field``. ``steps`` is the
    number of solver steps (DDPM always runs all K; pass None or K). ``clip_x0`` bounds each
    step's estimate of the clean plan, in standard deviations of the training data.
    ``cuda_graph`` (default: on for CUDA models) replays the whole sampling loop as one captured
    CUDA graph per batch shape; the first call of a shape captures it. Keyword options of
    :func:`plan_batch` (warm start, guidance skip, :class:`Speed`) pass through.
    """
    actions, z = plan_batch(
        models,
        obs,
        mean_field,
        solver,
        steps,
        guidance_scale,
        n_candidates,
        generator,
        clip_x0,
        cuda_graph,
        **fast,  # type: ignore[arg-type]
    )
    with torch.inference_mode():
        own, mf_plan = models.from_model_space(z)
        plans = own if mf_plan is None else torch.cat([own, mf_plan], dim=-1)
    return actions.double().cpu().numpy(), plans.cpu().numpy()
