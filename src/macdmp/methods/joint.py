"""Several runs of one method acting as one: one planning call per frame for all their agents.

A diffusion planner's decision for a frame is hundreds of small kernels whatever the number of
agents, so on a GPU it costs about the same for the agents of one run as for those of K runs.
A :class:`JointModel` is a copy of the first run's module whose ``joint_modules`` children
(:attr:`~macdmp.methods.base.Method.joint_modules`: MA-CDMP's noise model, classifier and
inverse dynamics) compute the K runs' own weights at once: each call's rows are split into K
equal blocks, run-major (block k belongs to run k), and the K blocks go through the child
under ``torch.vmap`` over the runs' stacked parameters (``torch.func.functional_call``). The
method's actor is built on it unchanged; the rows stay run-major through it because every
repetition of rows in the planner is per row (candidates by ``repeat_interleave``,
classifier-free guidance's two halves interleaved: ``macdmp.diffusion.sampler.guided_eps``).

:func:`evaluate_jointly` is the in-loop validation of a stacked group (:class:`~macdmp.methods.
stacked.StackedTrainer`): the K runs' networks are simulated side by side, each run's agents
acting by its own weights, in one call per frame; each run then records its evaluation as it
would alone. What differs from K evaluations alone: the sampler's noise for all K runs comes
from one generator, so a run's result equals its evaluation alone in distribution, not bit for
bit (tests/test_joint.py checks the children against the runs' own modules, and that every
call of a joint plan gives each run only its own agents).

Runs can act jointly when they share the method and its configuration (but the fields each run
applies to itself), and every tensor and plain attribute outside the joint children is equal
(the normaliser and the default target, which come from the dataset); :func:`why_not_joint`
names the first difference otherwise, and the evaluations then run one run at a time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from macdmp.methods.base import PER_RUN_KEYS, Method
from macdmp.methods.policy import ActorPolicy
from macdmp.policies.episodes import run_groups
from macdmp.sim.seeds import validation_seeds

PLAIN = (bool, int, float, str, tuple, type(None))  # the attribute kinds compared


class _Vmapped(nn.Module):
    """K copies of one child module as one: rows run-major, each block by its run's weights."""

    def __init__(self, template: nn.Module, k: int, name: str) -> None:
        super().__init__()
        self.k, self.name = k, name
        # the structure whose tensors functional_call replaces; its own are never read
        object.__setattr__(self, "template", copy.deepcopy(template).requires_grad_(False))
        self.params: dict[str, torch.Tensor] = {}
        self.buffers_: dict[str, torch.Tensor] = {}

    def load(self, children: Sequence[nn.Module]) -> None:
        """The runs' weights, stacked (in place after the first load: a captured CUDA graph
        keeps reading the same tensors)."""
        for store, named in (
            (self.params, [dict(c.named_parameters()) for c in children]),
            (self.buffers_, [dict(c.named_buffers()) for c in children]),
        ):
            for name in named[0]:
                values = torch.stack([d[name].detach() for d in named])
                if name in store:
                    store[name].copy_(values)
                else:
                    store[name] = values

    def _one(self, params, buffers, *xs):
        return torch.func.functional_call(self.template, (params, buffers), xs)

    def forward(self, *args: Any) -> torch.Tensor:
        rows = args[0].shape[0]
        if rows % self.k:
            raise ValueError(f"joint call: {rows} rows do not split into {self.k} runs")
        per = rows // self.k
        dims: list[int | None] = []
        xs: list[Any] = []
        for x in args:
            if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == rows:
                xs.append(x.reshape(self.k, per, *x.shape[1:]))
                dims.append(0)
            else:
                xs.append(x)
                dims.append(None)
        run = torch.vmap(self._one, in_dims=(0, 0, *dims), randomness="error")
        out = run(self.params, self.buffers_, *xs)
        return out.reshape(rows, *out.shape[2:])


def module_attrs(method: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plain attributes (numbers, strings) of every submodule, by dotted name (attribute
    names in ``skip`` left out); runs acting or trained as one must agree on them."""
    out = {}
    for prefix, mod in method.named_modules():
        for key, value in vars(mod).items():
            if key.startswith("_") or key == "training" or key in skip:
                continue
            if isinstance(value, PLAIN):
                out[f"{prefix}.{key}" if prefix else key] = value
    return out


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first key (sorted) whose values differ, with both values ("(none)" where absent)."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "(none)"), b.get(key, "(none)")
        if va != vb:
            return key, va, vb
    return None


def why_not_joint(methods: Sequence[Method]) -> str | None:
    """None when these run modules can act as one :class:`JointModel`, else the first reason
    they cannot (another method, no joint children, a configuration field other than
    ``PER_RUN_KEYS``, or a tensor or attribute outside the joint children, that differs)."""
    if not methods:
        return "no runs"
    m0 = methods[0]
    names = type(m0).joint_modules
    if not names:
        return f"{m0.name}: no joint_modules (its actor is not known to keep rows run-major)"
    for m in methods[1:]:
        if type(m) is not type(m0):
            return f"methods differ ({m0.name}, {m.name})"
    cfg0 = {k: v for k, v in m0.cfg.to_dict().items() if k not in PER_RUN_KEYS}
    skip = tuple(f"{n}." for n in names)
    state0 = {k: v for k, v in m0.state_dict().items() if not k.startswith(skip)}
    attrs0 = {k: v for k, v in module_attrs(m0).items() if not k.startswith(skip)}
    for m in methods[1:]:
        cfg = {k: v for k, v in m.cfg.to_dict().items() if k not in PER_RUN_KEYS}
        diff = first_difference(cfg0, cfg)
        if diff is not None:
            return f"config field {diff[0]} differs ({diff[1]!r}, {diff[2]!r})"
        state = m.state_dict()
        for key, v in state0.items():
            w = state.get(key)
            if w is None or w.shape != v.shape or not torch.equal(w, v):
                return f"{key} differs between the runs (the data's statistics?)"
        attrs = {k: v for k, v in module_attrs(m).items() if not k.startswith(skip)}
        diff = first_difference(attrs0, attrs)
        if diff is not None:
            return f"{diff[0]} differs between the runs ({diff[1]!r}, {diff[2]!r})"
    return None


class JointModel:
    """The K runs' modules as one module of their method (see the module docstring); the
    children of ``joint_modules`` hold the K runs' weights, stacked. :meth:`load` copies the
    runs' current weights in (the modules given, or others of the same runs)."""

    def __init__(self, methods: Sequence[Method]) -> None:
        reason = why_not_joint(methods)
        if reason is not None:
            raise ValueError(f"runs cannot act jointly: {reason}")
        self.k = len(methods)
        self.names = type(methods[0]).joint_modules
        self.model = copy.deepcopy(methods[0]).eval()
        for name in self.names:
            setattr(self.model, name, _Vmapped(getattr(methods[0], name), self.k, name))
        self.load(methods)

    def load(self, methods: Sequence[Method]) -> None:
        if len(methods) != self.k:
            raise ValueError(f"load: {len(methods)} runs given, this model holds {self.k}")
        for name in self.names:
            getattr(self.model, name).load([getattr(m, name) for m in methods])


def evaluate_jointly(trainers: Sequence[Any], joint: JointModel) -> list[dict[str, Any] | None]:
    """The in-loop evaluation (``Trainer.evaluate``) of K runs at once: their EMA weights in
    ``joint``, their validation networks side by side, one planning call per frame; each run
    records its own result (``Trainer.record_eval``). The runs must share the validation
    settings and scenarios (checked)."""
    t0 = trainers[0]
    if getattr(t0.data, "scenario_configs", None) is None:
        return [None] * len(trainers)  # data without scenarios: no in-loop evaluation
    scenarios = t0.data.scenario_configs()
    names = [c.name for c in scenarios]
    for tr in trainers[1:]:
        if (tr.cfg.eval_seeds, tr.cfg.eval_frames) != (t0.cfg.eval_seeds, t0.cfg.eval_frames):
            raise ValueError("evaluate_jointly: the runs' eval_seeds or eval_frames differ")
        if [c.name for c in tr.data.scenario_configs()] != names:
            raise ValueError("evaluate_jointly: the runs' datasets have other scenarios")
    for tr in trainers:
        tr.sync()
    start = time.perf_counter()
    joint.load([tr.ema for tr in trainers])
    policy = ActorPolicy(joint.model.make_actor(seed=0), t0.method.name, float(t0.data.rbs))
    seeds = validation_seeds(t0.cfg.eval_seeds)
    groups = [(c, seeds) for _ in trainers for c in scenarios]
    results = run_groups(groups, policy, frames=t0.cfg.eval_frames)
    seconds = time.perf_counter() - start
    n = len(scenarios)
    return [
        tr.record_eval(results[k * n : (k + 1) * n], seconds, runs=len(trainers))
        for k, tr in enumerate(trainers)
    ]
