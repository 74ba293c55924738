"""The method interface: every learned method (MA-CDMP and each baseline) is one ``Method``.

A method declares
- ``config_class``: a frozen dataclass derived from :class:`TrainConfig`, validated when built
  (the common optimisation and bookkeeping fields live in ``TrainConfig``);
- ``presets``: named configurations (at least ``demo`` and ``paper``);
- ``batch_keys(cfg)``: which fields of a training window its loss reads (``x``, ``xbar``,
  ``act``, ``rew``, ``y``; see :mod:`macdmp.data.windows`), windows of ``cfg.horizon`` frames;
- ``__init__(cfg, stats, rbs)``: its networks, built from the dataset's normalisation
  statistics and the frame's resource blocks M x L;
- ``loss(batch, generator)``: a dict of scalar tensors with the keys ``loss_names``, ``"loss"``
  first (what is minimised). It must not synchronise with the host (no ``.item()``), so that the
  whole step can be captured as one CUDA graph;
- ``make_actor(seed, **options)``: an :class:`Actor` that acts for a batch of agents.

One trainer (:mod:`macdmp.methods.trainer`) owns the optimiser, the EMA copy, the learning-rate
schedule, logging, evaluation and checkpoints for every method; one checkpoint format
(:mod:`macdmp.methods.checkpoint`) stores every run; a run folder is a policy by itself
(:mod:`macdmp.methods.policy`). ``docs/guide/adding-a-method.md`` shows how to add a method.

The registry names every method. The built-in ones are in ``_REGISTRY``; a method from outside
the package (a *plugin*) is registered in one of three ways, all of which reach every command
(``train``, ``evaluate``, ``simulate``, ``reproduce``, ...) and every process they start:

- an installed distribution's entry point in the group ``macdmp.methods`` (``PLUGIN_GROUP``),
  named by the method and pointing at its class::

      [project.entry-points."macdmp.methods"]
      my-linear = "macdmp_linear:LinearMethod"

  Entry points are read once, on the first call of :func:`method_names`, :func:`get_method`,
  :func:`plugin_methods`, :func:`register_method` or :func:`load_plugins`, without importing
  anything: the module is imported when the method is first used;
- ``macdmp --plugin MODULE COMMAND ...`` (:func:`load_plugins`): MODULE is imported and
  registers its methods at import with ``register_method("my-linear", LinearMethod)`` (a class)
  or ``register_method("my-linear", "macdmp_linear:LinearMethod")``;
- the environment variable ``MACDMP_PLUGINS`` (``PLUGINS_ENV``), a comma list of such modules,
  imported at the same lazy point as the entry points. :func:`load_plugins` appends its modules
  to it, so that the processes a command starts (the reproduction's workers, Ray workers) see
  the methods given with ``--plugin``.

:func:`method_names` lists the built-in methods, then the plugins in registration order
(:func:`plugin_methods`: entry points first, then ``MACDMP_PLUGINS``, ``--plugin`` and direct
``register_method`` calls). A plugin may not take a built-in method's name, nor a name another
plugin holds with another class: both are refused, naming the two. Registering a name again
with the same class (an entry point whose module also registers itself) changes nothing. A
plugin class's ``name`` must be the name it is registered under (its run folders record it).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from macdmp.data.rewards import REWARDS

LR_SCHEDULES = ("cosine", "constant")
# Run length and bookkeeping: they may change when a run is resumed, and may differ between the
# runs trained as one stacked model (macdmp.methods.stacked).
BOOKKEEPING_KEYS = (
    "n_epochs",
    "steps_per_epoch",
    "max_steps",
    "log_every",
    "ckpt_every",
    "eval_every",
    "eval_seeds",
    "eval_frames",
)
# Configuration fields that may differ between runs trained as one stacked model, or acting as
# one (macdmp.methods.stacked, macdmp.methods.joint): the trainer applies them per run
# (initialisation seed and generator, optimiser, schedule, clipping, EMA) or they are run length
# and bookkeeping. Every other field may be read by the loss or the actor, and must be equal.
PER_RUN_KEYS = (
    "seed",
    "lr",
    "lr_schedule",
    "warmup_steps",
    "min_lr_ratio",
    "grad_clip",
    "ema_decay",
    "ema_start",
    *BOOKKEEPING_KEYS,
)
# Fields that may change when a run is resumed: run length and bookkeeping only.
RESUMABLE_KEYS = (
    *BOOKKEEPING_KEYS,
    # the GPU arithmetic: how a step is computed, like the device (a run resumed on the CPU
    # ignores both), not which run it is
    "tf32",
    "bf16",
    "streams",
    "flat",
)
# The demo presets' schedule, shared by every method: checkpoints every epoch of 250 steps, a log
# line every 50; and the diffusion models' warm-up and EMA start at that size.
DEMO_SCHEDULE: dict[str, int] = {"steps_per_epoch": 250, "log_every": 50, "ckpt_every": 250}
DEMO_DIFFUSION: dict[str, int] = {"warmup_steps": 100, "ema_start": 200, **DEMO_SCHEDULE}

# Fields added after results were recorded, written out (to_dict) only when set: the
# configuration of a run without them (config.json, checkpoints, the reproduction's and the
# bench's unit digests, which hash it) is the one recorded before they existed. A method's
# config class adds its own in ``omit_at_default``.
OMIT_AT_DEFAULT = {"tf32": False, "bf16": False, "streams": True, "flat": True}


def _need(obj: Any, ok: bool, name: str, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {allowed} (got {getattr(obj, name)!r})")


@dataclass(frozen=True)
class TrainConfig:
    """The fields every method's configuration has: data, optimisation and bookkeeping."""

    omit_at_default: ClassVar[dict[str, Any]] = OMIT_AT_DEFAULT

    # data: windows of `horizon` frames, returns discounted by `gamma`, built from the
    # per-frame `reward` chosen when the windows are built (macdmp.data.rewards.REWARDS)
    horizon: int = 16
    gamma: float = 0.99
    reward: str = "delay"
    # optimisation (one Adam over the method's parameters, owned by the trainer)
    batch_size: int = 64
    lr: float = 2e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    ema_start: int = 1000
    seed: int = 0
    # run length and bookkeeping (may change when a run is resumed)
    n_epochs: int = 100
    steps_per_epoch: int = 1000
    max_steps: int = 0  # > 0: stop after this many steps instead of n_epochs x steps_per_epoch
    log_every: int = 100
    ckpt_every: int = 1000
    # learning curves: evaluate the EMA policy every eval_every steps (0: never) on eval_seeds
    # held-out networks per scenario of the dataset, eval_frames frames each, ideal RF
    eval_every: int = 0
    eval_seeds: int = 2
    eval_frames: int = 200
    # GPU arithmetic of the training step (CUDA only: on the CPU both are ignored and the step
    # stays float32, so a run moves between devices unchanged). tf32: float32 matmuls in
    # TensorFloat-32 (convolutions already are, torch's default); bf16: the loss's forward
    # (its matmuls and convolutions: in effect the backbones) under bf16 autocast. Off by
    # default: docs/notes/training-arithmetic.md has the measurement behind each default.
    tf32: bool = False
    bf16: bool = False
    # streams: the independent parts of the method's loss (for MA-CDMP its three models) each
    # on a CUDA stream of its own, forward and backward, so their small kernels overlap
    # (macdmp.methods.branches). On by default: the same kernels, so the same numbers, and
    # 1.1-1.3x the steps/s (docs/guide/training.md). CUDA only; methods whose loss has no such
    # parts ignore it.
    streams: bool = True
    # flat: the update after the backward (clipping, Adam, EMA) over one flat buffer each for
    # the weights, their EMA, the gradients and Adam's moments, every parameter a view into
    # them (macdmp.methods.flat): a few kernels instead of dozens of multi-tensor launches. On
    # by default: the same arithmetic (bit-identical on the CPU) and the same checkpoints.
    flat: bool = True

    def __post_init__(self) -> None:
        need = lambda ok, name, allowed: _need(self, ok, name, allowed)  # noqa: E731
        need(isinstance(self.horizon, int) and self.horizon >= 1, "horizon", "an integer >= 1")
        need(0.0 < self.gamma <= 1.0, "gamma", "in (0, 1]")
        need(self.reward in REWARDS, "reward", f"one of {', '.join(REWARDS)}")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "> 0")
        need(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}")
        need(self.warmup_steps >= 0, "warmup_steps", ">= 0")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "in [0, 1]")
        need(self.grad_clip > 0, "grad_clip", "> 0")
        need(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)")
        need(self.ema_start >= 0, "ema_start", ">= 0")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.n_epochs >= 1, "n_epochs", ">= 1")
        need(self.steps_per_epoch >= 1, "steps_per_epoch", ">= 1")
        need(self.max_steps >= 0, "max_steps", ">= 0 (0: n_epochs x steps_per_epoch)")
        need(self.log_every >= 1, "log_every", ">= 1")
        need(self.ckpt_every >= 1, "ckpt_every", ">= 1")
        need(self.eval_every >= 0, "eval_every", ">= 0 (0: no evaluation during training)")
        need(self.eval_seeds >= 1, "eval_seeds", ">= 1")
        need(self.eval_frames >= 1, "eval_frames", ">= 1")
        need(isinstance(self.tf32, bool), "tf32", "true or false")
        need(isinstance(self.bf16, bool), "bf16", "true or false")
        need(isinstance(self.streams, bool), "streams", "true or false")
        need(isinstance(self.flat, bool), "flat", "true or false")

    @property
    def total_steps(self) -> int:
        return self.max_steps or self.n_epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields (tuples as lists; the fields of ``omit_at_default``
        only when they differ from their default)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if not (k in self.omit_at_default and v is self.omit_at_default[k])
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}; known keys are {sorted(names)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of cfg.lr for the update after ``step`` updates: linear warm-up, then cosine
    decay to min_lr_ratio at total_steps, or constant."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    p = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def lr_factor_tensor(cfg: TrainConfig, step: torch.Tensor) -> torch.Tensor:
    """:func:`lr_factor` computed on the device from a step counter tensor (no host sync)."""
    s = step.to(torch.float64)
    if cfg.lr_schedule == "constant":
        after = torch.ones_like(s)
    else:
        span = max(1, cfg.total_steps - cfg.warmup_steps)
        p = ((s - cfg.warmup_steps) / span).clamp(0.0, 1.0)
        after = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + torch.cos(math.pi * p))
    if cfg.warmup_steps <= 0:
        return after
    return torch.where(s < cfg.warmup_steps, (s + 1) / cfg.warmup_steps, after)


class Actor:
    """Acts for a batch of agents: demands (A,) in RBs from observations (A, 4) and the
    neighbours' mean observations (A, 4). ``reset(n_agents)`` starts a new episode for every
    agent (clearing any per-agent history); agent a is row a of every later call."""

    label = "actor"

    def reset(self, n_agents: int) -> None:
        """A new episode for ``n_agents`` agents."""

    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def set_team_sizes(self, sizes: np.ndarray) -> None:
        """After ``reset``: the node count N of each agent's network (A,), which the evaluator
        knows. Only actors whose agents imagine their whole team (MADiff) read it; the others
        ignore it."""

    def describe(self) -> dict[str, Any]:
        return {"label": self.label}


# name -> "module:Class"; imported on first use so that `--policy equal` never loads torch
# models, and so that this module imports no method.
_REGISTRY: dict[str, str] = {
    "ma-cdmp": "macdmp.planner.models:PlannerModels",
    "bc": "macdmp.baselines.bc:BehaviourCloning",
    "ma-cql": "macdmp.baselines.cql:MACQL",
    "ma-td3bc": "macdmp.baselines.td3bc:MATD3BC",
    "ma-dt": "macdmp.baselines.dt:MADT",
    "ma-diffuser": "macdmp.baselines.madiffuser:MADiffuser",
    "ma-dd": "macdmp.baselines.madd:MADD",
    "madiff": "macdmp.baselines.madiff:MADiff",
}


class Method(nn.Module):
    """Base class of every learned method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    presets: ClassVar[dict[str, TrainConfig]] = {}
    loss_names: ClassVar[tuple[str, ...]] = ("loss",)
    # submodules worth compiling with torch.compile on a GPU (the backbones)
    compile_modules: ClassVar[tuple[str, ...]] = ()
    # submodules through which several runs' actors may act as one (macdmp.methods.joint):
    # every call of them takes rows first, and the method's actor keeps rows in the order it
    # was given them (repeating a row only next to itself)
    joint_modules: ClassVar[tuple[str, ...]] = ()
    # options of make_actor accepted in `--policy RUN_DIR,key=value`: key -> (kwarg, type)
    actor_options: ClassVar[dict[str, tuple[str, type]]] = {}
    # the configuration changes that make a method's w/o MF twin (`macdmp train --no-mf`, the
    # benchmark's "w/o MF" rows): more than use_mf where other fields read the mean field
    no_mf_changes: ClassVar[dict[str, Any]] = {"use_mf": False}

    def __init__(self, cfg: TrainConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{self.name}: config must be a {self.config_class.__name__}")
        if not rbs > 0:
            raise ValueError(f"rbs: the maximum demand M x L must be > 0 (got {rbs})")
        self.cfg = cfg
        self.rbs = float(rbs)

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """The window fields the loss reads."""
        return ("x", "xbar", "act", "rew", "y")

    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step, inside the captured step (target networks)."""

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")


PLUGIN_GROUP = "macdmp.methods"  # the entry-point group of methods from outside the package
PLUGINS_ENV = "MACDMP_PLUGINS"  # comma list of plugin modules, imported by every process
_PLUGIN_HINT = (
    f"to add one, install a package with a {PLUGIN_GROUP!r} entry point, or pass --plugin MODULE "
    "(a module that calls register_method at import; docs/guide/adding-a-method.md)"
)
# a method name: used in run folders, unit keys and `--policy RUN_DIR,key=value` specs
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")

# Methods registered from outside the package, in registration order:
# name -> (target: "module:Class" until first used, then the class; where it was registered)
_PLUGINS: dict[str, tuple[str | type[Method], str]] = {}
_discovered = False  # entry points and MACDMP_PLUGINS read (once per process)
_loading: str | None = None  # the plugin module being imported by load_plugins, if any


def _target_text(target: str | type) -> str:
    if isinstance(target, str):
        return target
    return f"{target.__module__}:{target.__qualname__}"


def _discover() -> None:
    """Read the entry points of PLUGIN_GROUP and import the modules of MACDMP_PLUGINS, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    before = dict(_PLUGINS)
    try:
        for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            where = f"entry point {ep.name} = {ep.value!r}" + (f" of {dist}" if dist else "")
            # "module:Class [extra]": the extras name optional dependencies, not the target
            _register(ep.name, ep.value.split("[")[0].strip(), where)
        _import_plugins(_env_modules(), PLUGINS_ENV)
    except BaseException:  # the same error again on the next call, not a half-read registry
        _discovered = False
        _PLUGINS.clear()
        _PLUGINS.update(before)
        raise


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def _import_plugins(modules: Sequence[str], option: str) -> None:
    global _loading
    for module in modules:
        if not _MODULE.match(module):
            raise ValueError(f"{option}: {module!r} is not a module name (a.b.c)")
        before, _loading = _loading, f"{option} {module}"
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"{option}: cannot import module {module!r} ({exc})") from exc
        finally:
            _loading = before


def _register(name: str, target: str | type[Method], where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"method: {name!r} ({where}) is not a valid method name: letters, digits and "
            "'-', '_', '.', '+', starting with a letter or digit"
        )
    if isinstance(target, str):
        if not _TARGET.match(target):
            raise ValueError(
                f"method {name!r} ({where}): target must be 'module:Class' (got {target!r})"
            )
    elif not (isinstance(target, type) and issubclass(target, Method)):
        raise TypeError(
            f"method {name!r} ({where}): register a Method subclass or a 'module:Class' "
            f"string (got {target!r})"
        )
    text = _target_text(target)
    if name in _REGISTRY:
        raise ValueError(
            f"method {name!r}: {where} registers it as {text}, but {name!r} is the built-in "
            f"method {_REGISTRY[name]}; a plugin must choose another name"
        )
    if name in _PLUGINS:
        old, old_where = _PLUGINS[name]
        if _target_text(old) != text:
            raise ValueError(
                f"method {name!r}: {where} registers it as {text}, but {old_where} already "
                f"registered it as {_target_text(old)}; one name, one method"
            )
        if isinstance(target, type) and isinstance(old, str):  # the class itself: no import
            _PLUGINS[name] = (target, old_where)
        return  # the same method again (an entry point whose module registers itself)
    _PLUGINS[name] = (target, where)


def register_method(name: str, target: str | type[Method]) -> None:
    """Register a method from outside the package under ``name``: its class, or
    ``"package.module:Class"`` (imported when first used).

    A built-in method's name, or a name already registered with another class, is refused;
    the same name and class again is a no-op. A module given to ``--plugin`` (or listed in
    ``MACDMP_PLUGINS``) calls this at import."""
    _discover()
    if _loading is not None:
        where = _loading
    else:
        where = f"register_method() in {sys._getframe(1).f_globals.get('__name__', '?')}"
    _register(name, target, where)


def load_plugins(modules: Sequence[str]) -> None:
    """Import plugin modules (``--plugin MODULE``), which register their methods at import.

    A module that cannot be imported is a ValueError naming it. Each module imported is added
    to the environment variable ``MACDMP_PLUGINS``, so that the processes started from here on
    import it too."""
    if isinstance(modules, str):
        modules = [modules]
    _discover()
    for module in modules:
        module = module.strip()
        _import_plugins([module], "--plugin")
        env = _env_modules()
        if module not in env:
            os.environ[PLUGINS_ENV] = ",".join([*env, module])


def plugin_methods() -> tuple[str, ...]:
    """The methods registered from outside the package, in registration order."""
    _discover()
    return tuple(_PLUGINS)


def method_names() -> tuple[str, ...]:
    """Every registered method: the built-in ones, then the plugins (:func:`plugin_methods`)."""
    _discover()
    return (*_REGISTRY, *(n for n in _PLUGINS if n not in _REGISTRY))


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name``."""
    _discover()
    if name in _REGISTRY:
        module, _, cls = _REGISTRY[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    if name not in _PLUGINS:
        raise ValueError(
            f"method: {name!r} is not one of {', '.join(method_names())}; {_PLUGIN_HINT}"
        )
    target, where = _PLUGINS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"method {name!r}: cannot import module {module!r} of {target} ({where}): {exc}"
            ) from exc
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"method {name!r}: {target} ({where}): no attribute {part!r}")
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, Method)):
            raise ValueError(
                f"method {name!r}: {target} ({where}) is not a subclass of macdmp.methods.Method"
            )
        target = obj
        _PLUGINS[name] = (target, where)
    if target.name != name:
        raise ValueError(
            f"method {name!r}: {_target_text(target)} ({where}) has name = {target.name!r}; a "
            f"plugin class must set name = {name!r}, the name its run folders record"
        )
    return target


def make_config(method: str, preset: str = "demo", **overrides: Any) -> TrainConfig:
    """A method's preset configuration with fields replaced by ``overrides``."""
    cls = get_method(method)
    if preset not in cls.presets:
        raise ValueError(f"preset: must be one of {tuple(cls.presets)} (got {preset!r})")
    base = cls.presets[preset].to_dict()
    base.update(overrides)
    return cls.config_class.from_dict(base)
