"""Batched planning for all agents of a frame: one diffusion batch, one action per agent."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from macdmp.diffusion.graphs import GraphedCall, run_maybe_graphed
from macdmp.diffusion.sampler import (
    DEFAULT_CFG,
    DEFAULT_GUIDE,
    SOLVERS,
    Conditioning,
    dpm_warm_level,
    noise_draws,
    sample,
)
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.planner.export import FusedPlanner, OnnxBackbones

# `models` below is a macdmp.planner.models.PlannerModels, annotated as a plain Module: that
# module builds actors from this one, so importing it here would make the two import each other.

BACKENDS = ("torch", "onnx", "fused", "openvino")
# the backends that run the whole planning call as one exported graph, and the runtime of each
FUSED_RUNTIMES = {"fused": "onnxruntime", "openvino": "openvino"}
# the package each backend other than torch runs on (dependencies; the GPU image lacks them)
BACKEND_PACKAGES = {"onnx": "onnxruntime", **FUSED_RUNTIMES}
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
    DPM solvers only), or "openvino" for that graph run by OpenVINO instead.
    """

    compile: bool = False
    bf16: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {BACKENDS} (got {self.backend!r})")
        if self.backend != "torch" and (self.compile or self.bf16):
            raise ValueError(
                f"backend: {self.backend!r} runs a float32 ONNX graph; drop compile and bf16"
            )
        package = BACKEND_PACKAGES.get(self.backend)
        if package and importlib.util.find_spec(package) is None:  # before any planning
            raise ValueError(
                f"backend: {self.backend!r} needs the {package} package (pip install {package}); "
                "backend torch runs without it"
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


def sampling_call(
    nets: dict[str, Callable],
    sch: NoiseSchedule,
    shape: tuple[int, ...],
    solver: str,
    steps: int | None,
    guide: float,
    clip_x0: float | None,
    start: int | None,
    min_sigma: float,
    cond_dim: int = 0,
    cfg: float = 1.0,
    generator: torch.Generator | None = None,
    value_grad: Callable | None = None,
) -> Callable[..., torch.Tensor]:
    """One planning call's sampling loop as a function of tensors only, ``(known, noise,
    [x_start], [condition]) -> plans`` (known: the pinned first steps (B, P, C), the current
    observation and, with ``history``, the ones before it; x_start with a warm start;
    condition when the noise model takes one), for
    :func:`~macdmp.diffusion.graphs.run_maybe_graphed` to capture in a CUDA graph: a plan is
    hundreds of small kernels per solver step, which launched one by one from Python cost
    about 8x their GPU time (docs/notes/planner-speed.md). Called eagerly, ``noise`` may be
    None: the sampler then draws from ``generator``."""

    def run(known: torch.Tensor, noise: torch.Tensor | None, *rest: torch.Tensor) -> torch.Tensor:
        return sample(
            nets["eps_model"],
            sch,
            shape,
            solver=solver,
            steps=steps,
            cond=Conditioning.prefix(known, shape[1]),
            value=nets["value"],
            guide=guide,
            generator=generator,
            clip_x0=clip_x0,
            noise=noise,
            start_level=start,
            x_start=rest[0] if start is not None else None,
            guide_min_sigma=min_sigma,
            value_grad=value_grad,
            condition=rest[-1] if cond_dim else None,
            cfg=cfg,
        )

    return run


_GRAPHS: dict[tuple, GraphedCall] = {}


def shift_plans(z: torch.Tensor) -> torch.Tensor:
    """Plans (B, H, C) moved one frame on: step t+1 becomes step t, the last step repeated."""
    return torch.cat([z[:, 1:], z[:, -1:]], dim=1)


def _guidance_weights(
    models: torch.nn.Module, guidance: str, guide: float, cfg: float, target: float | None
) -> tuple[float | None, float, float]:
    """(the target return y or None, the sampler's cfg weight, the sampler's guide scale).

    Classifier-free guidance: every sample asks for the target return with weight ``cfg`` and
    no classifier gradient. Classifier guidance with scale ``guide``; on a cfg-trained model
    with weight 0 (its unconditional noise model, one call per step)."""
    if not models.cfg.cond_dim:
        return None, 1.0, float(guide)
    y = models.default_target if target is None else float(target)
    if not np.isfinite(y):
        raise ValueError(f"target: must be a finite return (got {y})")
    if guidance == "cfg":
        return y, float(cfg), 0.0
    return y, 0.0, float(guide)


class _FusedRuns:
    """The fused planners (backends "fused" and "openvino") of one model, batch, solver setting
    and runtime, one per guidance setting: each the whole planning call as one graph."""

    def __init__(self, models, a, n_candidates, solver, steps, guide, clip_x0, start, runtime):  # type: ignore[no-untyped-def]
        self.args = (models, a, n_candidates, solver, steps, guide, clip_x0, start)
        self.runtime = runtime
        self.runs: dict[tuple, object] = {}

    def _build(self, guide_min_sigma: float, y: float | None, cfg: float):  # type: ignore[no-untyped-def]
        models, a, n_candidates, solver, steps, guide, clip_x0, start = self.args
        mc = models.cfg
        h, c = mc.horizon, mc.channels
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
                guide=guide,
                clip_x0=clip_x0,
                noise=noise[None],
                start_level=start,
                x_start=x_start,
                guide_min_sigma=guide_min_sigma,
                condition=condition,
                cfg=cfg,
            )
            if n_candidates > 1:
                k1 = torch.zeros(z.shape[0], dtype=torch.long)
                best = models.classifier(z, k1).view(a, n_candidates).argmax(dim=1)
                z = z.view(a, n_candidates, h, -1)[torch.arange(a), best]
            return models.plan_action(obs, mf, z), z

        examples = {"obs": torch.zeros(a, mc.obs_dim), "noise": torch.zeros(shape)}
        if mc.use_mf:
            examples["mf"] = torch.zeros(a, mc.obs_dim)
        if start is not None:
            examples["prev"] = torch.zeros(a, h, c)
        return FusedPlanner(plan_fn, examples, torch.get_num_threads(), self.runtime)

    def __call__(self, key, o, mf, warm_from, generator):  # type: ignore[no-untyped-def]
        run = self.runs.get(key)
        if run is None:
            run = self.runs[key] = self._build(*key)
        models, a, n_candidates = self.args[:3]
        mc = models.cfg
        noise = torch.randn((a * n_candidates, mc.horizon, mc.channels), generator=generator)
        feed = {"obs": o.numpy(), "noise": noise.numpy()}
        if mf is not None:
            feed["mf"] = mf.numpy()
        if warm_from is not None:
            feed["prev"] = warm_from.detach().cpu().numpy()
        actions, z = run(**feed)  # type: ignore[operator]
        return torch.from_numpy(actions), torch.from_numpy(z)


# Keyed by id(models) and the setting; the values hold the models too (an id is never reused).
_FUSED: dict[tuple, tuple[torch.nn.Module, _FusedRuns]] = {}


def _fused(models, a, n_candidates, solver, steps, guide, clip_x0, start, runtime) -> _FusedRuns:  # type: ignore[no-untyped-def]
    key = (id(models), a, n_candidates, solver, steps, guide, clip_x0, start, runtime)
    key += (torch.get_num_threads(),)
    if key not in _FUSED:
        _FUSED[key] = (models, _FusedRuns(models, *key[1:-1]))
    return _FUSED[key][1]


def check_options(
    models: torch.nn.Module,
    solver: str,
    steps: int | None,
    guidance: str | None,
    n_candidates: int,
    guide: float,
    cfg: float,
    target: float | None,
    backend: str,
    warm: float = 0.0,
) -> str:
    """The checks of the planning options, in one place for :class:`PlannerActor` (when it is
    built) and :func:`plan_batch` (every call); returns the guidance (the model's by default).
    Each error names the option and what it allows."""
    mc = models.cfg
    guidance = mc.guidance if guidance is None else guidance
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance: must be one of {GUIDANCE} (got {guidance!r})")
    if guidance == "cfg" and not mc.cond_dim:
        raise ValueError("guidance: 'cfg' needs a model trained with guidance=cfg")
    if target is not None and guidance != "cfg":
        raise ValueError("target: only classifier-free guidance (guidance=cfg) takes one")
    for name, value in (("guide", guide), ("cfg", cfg), ("target", target)):
        if value is not None and not np.isfinite(value):
            raise ValueError(f"{name}: must be a finite number (got {value})")
    if solver not in SOLVERS:
        raise ValueError(f"solver: {solver!r} is not one of {SOLVERS}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps: must be >= 1 (got {steps})")
    if solver == "ddpm" and steps not in (None, mc.n_diffusion_steps):
        raise ValueError(f"steps: DDPM runs all K = {mc.n_diffusion_steps} steps (got {steps})")
    if n_candidates < 1:
        raise ValueError(f"candidates: must be >= 1 (got {n_candidates})")
    if warm != 0.0 and solver == "ddpm":
        raise ValueError("warm: warm starts need a DPM solver (dpm1 or dpm2)")
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {BACKENDS} (got {backend!r})")
    if backend != "torch" and models.normalizer.obs_mean.device.type != "cpu":
        raise ValueError(f"backend: {backend!r} runs on the CPU; add device=cpu")
    if backend in FUSED_RUNTIMES and solver == "ddpm":
        raise ValueError(f"backend: {backend!r} needs a DPM solver (dpm1 or dpm2)")
    if backend in FUSED_RUNTIMES and getattr(mc, "history", 0):
        raise ValueError(
            f"backend: {backend!r} plans from the current observation alone; a model trained "
            "with history > 0 runs with backend torch or onnx"
        )
    return guidance


def _past_frames(
    mc: Any,
    o: torch.Tensor,
    mf: torch.Tensor | None,
    past: np.ndarray | torch.Tensor | None,
    past_mf: np.ndarray | torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The raw frames a plan pins, own (A, k + 1, obs) and mean field (or None): the k =
    ``history`` frames before this one (``past``, ``past_mf``; the current ones repeated when
    None) and the current one."""
    k = getattr(mc, "history", 0)
    if not k:
        if past is not None or past_mf is not None:
            raise ValueError("past: this model plans from the current observation alone")
        return o[:, None], None if mf is None else mf[:, None]
    frames = []
    for name, now, given in (("past", o, past), ("past_mf", mf, past_mf)):
        if now is None:  # a model without the mean field
            frames.append(None)
            continue
        if given is None:
            before = now[:, None].expand(-1, k, -1)
        else:
            before = torch.as_tensor(
                np.asarray(given) if not torch.is_tensor(given) else given, device=device
            ).to(torch.float32)
            if tuple(before.shape) != (len(now), k, mc.obs_dim):
                raise ValueError(
                    f"{name}: expected shape {(len(now), k, mc.obs_dim)} (the last history = "
                    f"{k} frames, oldest first; got {tuple(before.shape)})"
                )
        frames.append(torch.cat([before, now[:, None]], dim=1))
    return frames[0], frames[1]  # type: ignore[return-value]


def plan_batch(
    models: torch.nn.Module,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    solver: str = "dpm2",
    steps: int | None = 10,
    guide: float = DEFAULT_GUIDE,
    n_candidates: int = 1,
    generator: torch.Generator | None = None,
    clip_x0: float | None = 5.0,
    cuda_graph: bool | None = None,
    *,
    cfg: float = DEFAULT_CFG,
    warm_from: torch.Tensor | None = None,
    warm: float = 0.3,
    guide_min_sigma: float = 0.0,
    speed: Speed | None = None,
    guidance: str | None = None,
    target: float | None = None,
    past: np.ndarray | torch.Tensor | None = None,
    past_mf: np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`plan` on tensors: (actions (A,) in RBs, chosen plans (A, H, C) in model space).

    ``past`` and ``past_mf``: for a model trained with ``history`` = k > 0, each agent's own
    observations and mean fields of the k frames before this one, (A, k, 4) raw, oldest first;
    a plan pins them and the current ones. None: the current ones repeated (an episode's first
    frame). A model with history 0 takes none.

    ``guidance`` (default: the model's ``cfg.guidance``): "classifier", the paper's classifier
    guidance with scale ``guide`` (a model trained for "cfg" then runs its noise model
    unconditioned); or "cfg", classifier-free guidance towards the return ``target`` (raw
    units; default the model's ``default_target``, the data's 90% quantile) with weight
    ``cfg`` (needs a model trained with ``guidance="cfg"``).

    ``warm_from``: each agent's previous plan in model space (what this returned last frame);
    it is shifted one frame on (:func:`shift_plans`), re-noised to the solver level nearest to
    ``warm`` x K and denoised from there (DPM solvers only). None plans from scratch.
    """
    speed = speed or Speed()
    mc = models.cfg
    guidance = check_options(
        models, solver, steps, guidance, n_candidates, guide, cfg, target, speed.backend,
        0.0 if warm_from is None else warm,
    )  # fmt: skip
    device = models.normalizer.obs_mean.device
    o = torch.as_tensor(np.asarray(obs) if not torch.is_tensor(obs) else obs, device=device)
    o = o.to(torch.float32)
    if o.dim() != 2 or o.shape[1] != mc.obs_dim:
        raise ValueError(f"obs: expected shape (A, {mc.obs_dim}) (got {tuple(o.shape)})")
    a = o.shape[0]
    mf = None
    if mc.use_mf:
        if mean_field is None:
            raise ValueError("mean_field: this model uses the mean field; pass (A, 4) values")
        mf = torch.as_tensor(np.asarray(mean_field), dtype=torch.float32, device=device)
        if mf.shape != o.shape:
            raise ValueError(f"mean_field: expected shape {tuple(o.shape)} (got {tuple(mf.shape)})")
    seen = _past_frames(mc, o, mf, past, past_mf, device)
    h = mc.horizon
    shape = (a * n_candidates, h, mc.channels)
    sch = _schedule(models, device)
    start = x_start = None
    if warm_from is not None:
        if tuple(warm_from.shape) != (a, h, mc.channels):
            raise ValueError(
                f"warm_from: expected shape {(a, h, mc.channels)} (got {tuple(warm_from.shape)})"
            )
        start = dpm_warm_level(sch, steps or mc.n_diffusion_steps, warm)
    y, w_cfg, w_guide = _guidance_weights(models, guidance, guide, cfg, target)
    if speed.backend in FUSED_RUNTIMES:
        if w_guide != 0.0:
            raise ValueError(
                f"backend: {speed.backend!r} takes classifier-free guidance or none, not the "
                "classifier's gradient (guidance=classifier with guide != 0); use backend=onnx"
            )
        runtime = FUSED_RUNTIMES[speed.backend]
        run = _fused(models, a, n_candidates, solver, steps, w_guide, clip_x0, start, runtime)
        run_key = (float(guide_min_sigma), y, w_cfg)
        return run(run_key, o, mf, warm_from, generator)
    with torch.inference_mode():
        known = models.to_model_space(*seen)  # (A, history + 1, C), the pinned first steps
        if warm_from is not None:
            x_start = shift_plans(warm_from)
            x_start = x_start.repeat_interleave(n_candidates, dim=0)
        known = known.repeat_interleave(n_candidates, dim=0)
        condition = None
        if y is not None:
            condition = models.normalizer.ret(torch.full((shape[0], 1), y, device=device))
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    nets = _backbones(models, speed, shape, device)
    rest = [v for v in (x_start, condition) if v is not None]  # the inputs besides known, noise
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph: needs the models on a CUDA device")
        key = (id(models), shape, solver, steps, w_guide, clip_x0, start)
        key += (float(guide_min_sigma), speed, w_cfg)
        noise = torch.empty(noise_draws(solver, sch.n_steps), *shape, device=device)
        run = sampling_call(
            nets, sch, shape, solver, steps, w_guide, clip_x0, start, guide_min_sigma,
            mc.cond_dim, w_cfg,
        )  # fmt: skip
        inputs = [known, noise.normal_(generator=generator), *rest]
        z = run_maybe_graphed(_GRAPHS, key, run, inputs, warmup=3, owner=models)
    else:
        run = sampling_call(
            nets, sch, shape, solver, steps, w_guide, clip_x0, start, guide_min_sigma,
            mc.cond_dim, w_cfg, generator, nets["value_grad"],
        )  # fmt: skip
        z = run(known.clone(), None, *rest)
    with torch.inference_mode():
        if n_candidates > 1:
            k1 = torch.zeros(z.shape[0], dtype=torch.long, device=device)
            score = models.classifier(z, k1).view(a, n_candidates)
            best = score.argmax(dim=1)
            z = z.view(a, n_candidates, h, -1)[torch.arange(a, device=device), best]
        # The pinned entry at position `history` is the current observation exactly; act on it
        # and the plan's o_t+1.
        actions = models.plan_action(o, mf, z)
    return actions, z


def plan(
    models: torch.nn.Module,
    obs: np.ndarray | torch.Tensor,
    mean_field: np.ndarray | torch.Tensor | None,
    *args: Any,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Plan for A agents at once from their observations (A, 4) and mean fields (A, 4); the
    options are :func:`plan_batch`'s (solver, steps, guidance and its weights, candidates,
    generator, clipping, CUDA graphs, warm starts, :class:`Speed`), in its order.

    Returns ``actions`` (A,) float64 demands in RBs in [0, M x L] and ``plans`` (A, H, C) in raw
    units (own observations, then mean-field ones when the model uses them). With
    ``n_candidates`` > 1 each agent samples that many plans and keeps the one the classifier
    values most. A model trained with ``use_mf=False`` ignores ``mean_field``. ``steps`` is the
    number of solver steps (DDPM always runs all K; pass None or K). ``clip_x0`` bounds each
    step's estimate of the clean plan, in standard deviations of the training data.
    ``cuda_graph`` (default: on for CUDA models) replays the whole sampling loop as one captured
    CUDA graph per batch shape; the first call of a shape captures it.
    """
    actions, z = plan_batch(models, obs, mean_field, *args, **options)
    with torch.inference_mode():
        own, mf_plan = models.from_model_space(z)
        plans = own if mf_plan is None else torch.cat([own, mf_plan], dim=-1)
    return actions.double().cpu().numpy(), plans.cpu().numpy()
