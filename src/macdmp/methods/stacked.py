"""Many runs of one method trained as one stacked model: one step, one CUDA graph, K runs.

Runs that share a method and its shapes but differ in seed, dataset or the trainer's own
settings (learning rate and its schedule, gradient clipping, EMA, run length, bookkeeping)
train as one model: each parameter and buffer of the K runs is stacked into one (K, ...)
tensor, and the K losses are computed by one call of the method's own ``loss`` under
``torch.vmap`` (``torch.func.functional_call`` over the stacked tensors), so every kernel of the
step does the work of K runs. On a GPU the whole stacked step is captured as one CUDA graph.

Each run stays an ordinary :class:`~macdmp.methods.trainer.Trainer` with its own folder: its
module's parameters and buffers become views of its slice of the stacked tensors, and its
generator, gradient clipping, ``after_step`` (target networks), loss sums, logs, evaluations
and checkpoints are its own, so its folder resumes alone and loads as a policy with the usual
code. Runs of one schedule (the seeds of one configuration: same lr, schedule, run length and
EMA settings) take one Adam step and one EMA update over the stacked tensors (both elementwise:
each slice is updated exactly as the run's own optimiser would; its slice of the Adam state is
written into its checkpoint); runs of different schedules each use their own optimiser and EMA
on their slice. :func:`train_stacked` trains such runs; :func:`train_many` stacks when the runs
allow it and packs them otherwise (:func:`~macdmp.methods.trainer.train_packed`, CUDA streams).

Randomness: a run alone draws its batch and then its loss's noise from its own generator. The
stacked step draws the same numbers from the same generator in the same order: the loss's
random draws (the calls that pass ``generator=``; their shapes may not depend on the data) are
recorded once, drawn per run before the vmapped loss, and handed to it in place of the calls.
So a stacked run sees the batches and noise it would see alone (its generator ends in the same
state); only the arithmetic of the batched kernels differs, which tests/test_stacked.py bounds.

Convolutions (:data:`CONVS`): vmap's own rule makes the K runs' 1-D convolutions one grouped
cuDNN convolution, which is slow on a GPU (an H200, paper preset, 8 runs: 54 stacked steps/s);
by default they are computed as unfold + one batched matrix product (74.5 steps/s, 4.5x the
total throughput of one captured run), with TF32 products where cuDNN uses TF32 (its default),
as the run alone. docs/notes/results/gpu-2026-12-02-stacked has the measurements. Group norms
(:data:`NORMS`): by default (``norm="rows"``) as layer_norm over rows (:func:`_group_norm_rows`),
whose backward suits the few positions of a window better than vmap's own rule (``"native"``):
on an H100, paper preset, 8 runs, 842.8 against 681.8 stacked steps/s in all
(docs/guide/training.md, "A stacked step with fewer, larger kernels").

Runs of one schedule with the configuration's ``flat`` (its default; ``update="flat"`` of
:data:`UPDATES`) clip, take Adam's step and update the EMA over (K, P) buffers, run k along row
k, and the loss reads the weights as views of them (``FlatUpdate(runs=K)``,
:mod:`macdmp.methods.flat`): on an H100, paper preset, 8 runs, 940.7 against 841.9 stacked
steps/s in all (docs/guide/training.md, "The flat update for stacked runs"). Otherwise
(``update="tensors"``) each run's gradient is clipped to its own ``grad_clip`` by one function
over the stacked gradients (:func:`clip_stacked`, the norms ``clip_grad_norm_`` computes per
run), then one fused Adam and one EMA update go over the stacked tensors. With the
trainers' ``compile`` (``--compile``) on a GPU, the vmapped loss (forward and backward) and the
clipping go through ``torch.compile`` inside the captured graph; measured on an H200 (paper
preset) it gained 11% for eight runs and lost 20% for one, less than its two minutes of
compilation are worth over a run, so it is off by default (docs/guide/training.md).

What may differ between stacked runs: the fields of :data:`PER_RUN_KEYS`, the dataset (same
horizon, gamma and reward, as each trainer already checks), and the run's own state. Anything
else (another method, another configuration value that the loss may read, other parameter
shapes, another device or step arithmetic, runs at different steps) is refused with
:class:`NotStackable`, naming what differs; :func:`train_many` then packs the runs. Runs of
other lengths train stacked to the first one's end and packed after it.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from macdmp.common.progress import progress_bar
from macdmp.common.signals import stop_requests
from macdmp.methods.base import PER_RUN_KEYS, lr_factor, lr_factor_tensor
from macdmp.methods.flat import FlatUpdate
from macdmp.methods.joint import (
    JointModel,
    evaluate_jointly,
    first_difference,
    module_attrs,
    why_not_joint,
)
from macdmp.methods.trainer import (
    WARMUP_STEPS_BEFORE_CAPTURE,
    Trainer,
    TrainingInterrupted,
    ema_update,
    ema_weight,
    train_packed,
    wait_for_device,
)

# Plain attributes of a method's modules (numbers, strings) must be equal across stacked runs,
# since the one vmapped loss reads those of the first run. These are read only when acting, so
# they may differ (MA-CDMP's default target return comes from the dataset's statistics).
ACTING_ONLY_ATTRS: dict[str, tuple[str, ...]] = {"ma-cdmp": ("default_target",)}
# Factory functions whose results are made per run inside the vmapped loss when the loss writes
# per-run values into a tensor it created (vmap refuses such in-place writes otherwise).
_FACTORIES = (torch.zeros, torch.ones, torch.empty, torch.full)
# How the runs' 1-D convolutions (and transposed ones) are computed: "cudnn", vmap's own rule
# (one grouped cuDNN convolution for the K runs), or "matmul" (unfold + one batched matrix
# product, TF32 where cuDNN's would be): 74.5 against 54.0 stacked steps/s (H200, paper preset,
# 8 runs; docs/notes/results/gpu-2026-12-02-stacked/profile.txt).
CONVS = ("cudnn", "matmul")
DEFAULT_CONV = "matmul"
# How the runs' group norms are computed: "native", vmap's own rule (the K runs' batches as one
# batch of group_norm, then the per-run scale and shift), or "rows" (each group of each window
# one row of layer_norm, then the per-run scale and shift: the same mean and variance over the
# same elements; :func:`_group_norm_rows`): 842.8 against 681.8 stacked steps/s (H100, paper
# preset, 8 runs; docs/notes/results/gpu-2026-12-05b-stacked).
NORMS = ("native", "rows")
DEFAULT_NORM = "rows"
# How runs of one schedule update after the backward: "tensors", one fused Adam, one EMA and
# the clipping over the stacked tensors (multi-tensor kernels; the clipping's per run), or
# "flat", the clipping, Adam and the EMA over (K, P) buffers, run k along row k, the loss reading
# the weights as views of them (FlatUpdate(runs=K), macdmp.methods.flat): a few kernels over
# long rows. By default the runs' configuration field ``flat`` chooses, as it does for one run
# (flat_update): 940.7 against 841.9 stacked steps/s (H100, paper preset, 8 runs;
# docs/notes/results/gpu-2026-12-05f-flat-stacked).
UPDATES = ("tensors", "flat")
_UNBATCHED = re.compile(r"batching rule for (\S+?)\.? ")


def flat_update(trainers: Sequence[Trainer]) -> str:
    """The update stacked runs take by default: "flat" where every run's configuration has
    ``flat`` (its default), as each run alone would, else "tensors"."""
    return "flat" if all(tr.cfg.flat for tr in trainers) else "tensors"


def _schedule(cfg: Any) -> tuple:
    """What one optimiser and one EMA update over the stacked runs need to be equal."""
    keys = ("lr", "lr_schedule", "warmup_steps", "min_lr_ratio", "ema_start", "ema_decay")
    return (*(getattr(cfg, k) for k in keys), cfg.total_steps)


class NotStackable(ValueError):
    """The runs cannot be trained as one stacked model (the message says why)."""


# -- checks ------------------------------------------------------------------------------------
def _label(k: int, tr: Trainer) -> str:
    return f"run {k} ({tr.run_dir})"


def _tensor_layout(method: nn.Module) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for name, p in method.named_parameters():
        out[f"parameter {name}"] = (tuple(p.shape), p.dtype, p.requires_grad)
    for name, b in method.named_buffers():
        out[f"buffer {name}"] = (tuple(b.shape), b.dtype)
    return out


def check_stackable(trainers: Sequence[Trainer]) -> None:
    """Raise :class:`NotStackable`, naming what differs, unless the runs can train stacked."""
    if not trainers:
        raise NotStackable("no runs to stack")
    t0 = trainers[0]
    name = t0.method.name
    skip = ACTING_ONLY_ATTRS.get(name, ())
    cfg0 = {k: v for k, v in t0.cfg.to_dict().items() if k not in PER_RUN_KEYS}
    attrs0, layout0 = module_attrs(t0.method, skip), _tensor_layout(t0.method)
    for k, tr in enumerate(trainers[1:], start=1):
        this, first = _label(k, tr), _label(0, t0)
        if type(tr.method) is not type(t0.method):
            raise NotStackable(f"method: {first} is {name}, {this} is {tr.method.name}")
        for what, a, b in (
            ("device", t0.device, tr.device),
            ("capture", t0.capture, tr.capture),
            ("compile", t0.compile, tr.compile),
            ("step", t0.step, tr.step),
        ):
            if a != b:
                raise NotStackable(
                    f"{what}: {first} has {a}, {this} has {b} (stacked runs share one device, "
                    "one step function and one step counter)"
                )
        cfg = {k2: v for k2, v in tr.cfg.to_dict().items() if k2 not in PER_RUN_KEYS}
        diff = first_difference(cfg0, cfg)
        if diff:
            raise NotStackable(
                f"config {diff[0]}: {first} has {diff[1]!r}, {this} has {diff[2]!r} (only "
                f"{', '.join(PER_RUN_KEYS)} may differ between stacked runs)"
            )
        for what, a, b in (
            ("shapes", layout0, _tensor_layout(tr.method)),
            ("attribute", attrs0, module_attrs(tr.method, skip)),
        ):
            diff = first_difference(a, b)
            if diff:
                raise NotStackable(
                    f"{what}: {diff[0]} is {diff[1]} in {first}, {diff[2]} in {this}"
                )
    if t0.graph is not None or any(tr.graph is not None for tr in trainers):
        raise NotStackable("a run has already captured its own step (stack fresh trainers)")


# -- the loss's random draws ------------------------------------------------------------------
def _generator_of(kwargs: dict[str, Any] | None) -> torch.Generator | None:
    g = (kwargs or {}).get("generator")
    return g if isinstance(g, torch.Generator) else None


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, list | tuple):
        return any(_has_tensor(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_tensor(x) for x in obj.values())
    return False


class _RecordDraws(TorchFunctionMode):
    """Records the loss's calls that draw from a generator: (function, args, other kwargs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Callable, tuple, dict[str, Any]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _generator_of(kwargs) is not None:
            rest = {k: v for k, v in kwargs.items() if k != "generator"}
            if _has_tensor((args, rest)):
                raise NotStackable(
                    f"the loss draws {getattr(func, '__name__', func)} from its generator with "
                    "a tensor argument: its draws depend on the data, so they cannot be drawn "
                    "per run before the stacked loss"
                )
            self.calls.append((func, tuple(args), rest))
        return func(*args, **kwargs)


@contextlib.contextmanager
def _tf32_products(on: bool) -> Iterator[None]:
    if not on:  # nothing to set (and nothing for torch.compile to trace)
        yield
        return
    before = torch.get_float32_matmul_precision()
    if before == "highest":
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class _UnfoldedConv(torch.autograd.Function):
    """(B, C, L, k) windows x (O, C, k) weights -> (B, O, L): the product of a convolution,
    forward and backward with TF32 products when ``tf32`` (vmap batches it: one batched
    matrix product for the K runs). The windows are laid out as (B * L, C * k) rows once, in
    the forward, and those rows kept for the weight's gradient (an einsum over the windows'
    view lays them out again in the backward)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(cols, weight, tf32):
        b, c, n, k = cols.shape
        rows = cols.permute(0, 2, 1, 3).reshape(b * n, c * k)
        with _tf32_products(tf32):
            out = rows @ weight.reshape(weight.shape[0], c * k).t()  # (B * L, O)
        return out.view(b, n, -1).transpose(1, 2), rows

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, weight, tf32 = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1], weight)
        ctx.tf32 = tf32

    @staticmethod
    def backward(ctx, grad, _rows_grad):
        rows, weight = ctx.saved_tensors
        o, c, k = weight.shape
        b, n = grad.shape[0], grad.shape[2]
        g = grad.transpose(1, 2).reshape(b * n, o)  # the output's gradient as rows
        g_cols = g_weight = None
        with _tf32_products(ctx.tf32):
            if ctx.needs_input_grad[0]:
                g_rows = g @ weight.reshape(o, c * k)  # (B * L, C * k)
                g_cols = g_rows.view(b, n, c, k).permute(0, 2, 1, 3)
            if ctx.needs_input_grad[1]:
                g_weight = (g.t() @ rows).view(o, c, k)
        return g_cols, g_weight, None


def _conv1d_matmul(
    x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, tf32: bool | None = None
):
    """conv1d as unfold + matrix product: under vmap one batched matrix product for the K
    runs instead of a grouped convolution. With ``tf32=None`` its float32 products are TF32
    when cuDNN's are (torch.backends.cudnn.allow_tf32, on by default), as the run alone's
    convolutions; with ``tf32=False`` they follow the matmul precision in force (the compiled
    step: the configuration's ``tf32``)."""
    pad, step, k = _one(padding), _one(stride), weight.shape[-1]
    cols = (F.pad(x, (pad, pad)) if pad else x).unfold(-1, k, step)
    if tf32 is None:
        tf32 = x.is_cuda and torch.backends.cudnn.allow_tf32
    out = _UnfoldedConv.apply(cols, weight, tf32)[0]
    return out if bias is None else out + bias[:, None]


def _group_norm_rows(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """group_norm as layer_norm over rows: (N, C, ...) -> (N, G, C/G * ...), each row one
    group of one sample, normalised over its elements (the group's C/G channels at every
    position, as group_norm), then the channels' scale and shift. The same statistics over the
    same elements, summed in another order. Under vmap the rows of the K runs are one batch of
    layer_norm, whose kernels reduce a row per warp; group_norm's backward reduces each channel
    of each sample in a block of its own, a few positions at most here."""
    n, c = x.shape[0], x.shape[1]
    if c % num_groups:
        raise ValueError(f"num_groups: must divide the {c} channels (got {num_groups})")
    width = x[0].numel() // num_groups
    y = F.layer_norm(x.reshape(n, num_groups, width), (width,), eps=eps).reshape(x.shape)
    shape = (c,) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    return y if bias is None else y + bias.reshape(shape)


def _one(v: Any) -> Any:
    return v[0] if isinstance(v, tuple | list) and len(v) == 1 else v


def _conv_call(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any]:
    return {**dict(zip(names, args, strict=False)), **kwargs}


_CONV1D = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONVT1D = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


def _plain_conv1d(args: tuple, kwargs: dict) -> bool:
    """A conv1d call that _conv1d_matmul computes: no groups, no dilation, numeric padding."""
    call = _conv_call(_CONV1D, args, kwargs)
    return (
        _one(call.get("groups", 1)) == 1
        and _one(call.get("dilation", 1)) == 1
        and isinstance(_one(call.get("padding", 0)), int)
        and isinstance(_one(call.get("stride", 1)), int)
        and call["input"].dim() == 3
    )


def _plain_conv_transpose1d(args: tuple, kwargs: dict) -> bool:
    """A conv_transpose1d call that _conv_transpose1d_matmul computes."""
    call = _conv_call(_CONVT1D, args, kwargs)
    k = call["weight"].shape[-1]
    return (
        _one(call.get("groups", 1)) == 1
        and _one(call.get("dilation", 1)) == 1
        and _one(call.get("output_padding", 0)) == 0
        and isinstance(_one(call.get("stride", 1)), int)
        and isinstance(_one(call.get("padding", 0)), int)
        and 0 <= _one(call.get("padding", 0)) <= k - 1
        and call["input"].dim() == 3
    )


def _conv_transpose1d_matmul(*args: Any, tf32: bool | None = None, **kwargs: Any) -> torch.Tensor:
    """conv_transpose1d as a convolution of stride 1 (zeros between the inputs, the kernel
    flipped and transposed), computed by _conv1d_matmul."""
    call = _conv_call(_CONVT1D, args, kwargs)
    x, weight, bias = call["input"], call["weight"], call.get("bias")
    step, pad, k = _one(call.get("stride", 1)), _one(call.get("padding", 0)), weight.shape[-1]
    if step > 1:  # s - 1 zeros after every input but the last
        b, c, n = x.shape
        x = torch.stack([x, *[torch.zeros_like(x)] * (step - 1)], -1).reshape(b, c, n * step)
        x = x[..., : n * step - (step - 1)]
    x = F.pad(x, (k - 1 - pad, k - 1 - pad))
    return _conv1d_matmul(x, weight.transpose(0, 1).flip(-1), bias, tf32=tf32)


class _ReplayDraws(TorchFunctionMode):
    """Inside the vmapped loss: each generator call returns the run's pre-drawn tensor; with
    ``anchor`` (a per-run zero), new tensors of the factory functions are made per run; with
    ``conv="matmul"``, conv1d as unfold + matrix product (:func:`_conv1d_matmul`, with its
    ``tf32``); with ``norm="rows"``, group_norm as layer_norm over rows
    (:func:`_group_norm_rows`)."""

    def __init__(
        self,
        calls,
        draws,
        anchor: torch.Tensor | None,
        conv: str = "cudnn",
        tf32: bool | None = None,
        norm: str = "native",
    ) -> None:
        super().__init__()
        self.calls, self.draws, self.anchor, self.i, self.conv = calls, draws, anchor, 0, conv
        self.tf32, self.norm = tf32, norm

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _generator_of(kwargs) is not None:
            rest = {k: v for k, v in kwargs.items() if k != "generator"}
            if self.i >= len(self.calls) or self.calls[self.i] != (func, tuple(args), rest):
                raise NotStackable(
                    f"the loss's random draw {self.i} ({getattr(func, '__name__', func)}"
                    f"{tuple(args)}) is not the one recorded: its draws change between calls"
                )
            self.i += 1
            return self.draws[self.i - 1]
        if self.conv == "matmul" and func is torch.conv1d and _plain_conv1d(args, kwargs):
            return _conv1d_matmul(*args, **kwargs, tf32=self.tf32)
        if (
            self.conv == "matmul"
            and func is torch.conv_transpose1d
            and _plain_conv_transpose1d(args, kwargs)
        ):
            return _conv_transpose1d_matmul(*args, **kwargs, tf32=self.tf32)
        if self.norm == "rows" and func is F.group_norm:
            return _group_norm_rows(*args, **kwargs)
        out = func(*args, **kwargs)
        if self.anchor is not None and func in _FACTORIES:
            anchor = self.anchor.bool() if out.dtype == torch.bool else self.anchor.to(out.dtype)
            out = out | anchor if out.dtype == torch.bool else out + anchor  # same values
        return out


def clip_stacked(grads: list[torch.Tensor], max_norm: torch.Tensor) -> None:
    """``clip_grad_norm_`` of each run on the stacked gradients (K, ...) at once: run k's
    gradients are scaled by min(1, max_norm[k] / (its total 2-norm + 1e-6)), as
    ``torch.nn.utils.clip_grad_norm_`` scales them alone (the same norms; float rounding)."""
    if not grads:
        return
    k = grads[0].shape[0]
    # run by run, as clip_grad_norm_ alone: each tensor's norm by the multi-tensor kernels
    # (a few launches for all K x tensors, not one per tensor), then the norm of the norms
    runs = [[g[r] for g in grads] for r in range(k)]
    norms = torch.stack([torch.stack(torch._foreach_norm(run)) for run in runs])  # (K, tensors)
    coef = (max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
    for r, run in enumerate(runs):
        torch._foreach_mul_(run, coef[r])


class _LossCall(nn.Module):
    """The method's loss as a module's forward, for torch.func.functional_call."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.m = method

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return self.m.loss(batch, generator)


def _set_tensor(module: nn.Module, dotted: str, value: torch.Tensor, buffer: bool) -> None:
    owner_name, _, attr = dotted.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if buffer:
        owner._buffers[attr] = value
    else:
        owner._parameters[attr].data = value  # the same Parameter: optimiser keeps its state


class StackedTrainer:
    """K trainers of one method trained as one stacked model (see the module docstring).

    The trainers must be fresh from their constructor (new or resumed, all at the same step);
    while stacked, their modules' tensors are views of the stacked ones; :meth:`close` (also
    at the end of :meth:`run`) gives each back tensors of its own.
    """

    def __init__(
        self,
        trainers: Sequence[Trainer],
        conv: str = DEFAULT_CONV,
        joint_eval: bool = True,
        norm: str = DEFAULT_NORM,
        update: str | None = None,
    ) -> None:
        if conv not in CONVS:
            raise ValueError(f"conv: must be one of {CONVS} (got {conv!r})")
        if norm not in NORMS:
            raise ValueError(f"norm: must be one of {NORMS} (got {norm!r})")
        if update is not None and update not in UPDATES:
            raise ValueError(f"update: must be one of {UPDATES} (got {update!r})")
        check_stackable(trainers)
        update = update or flat_update(trainers)
        self.conv, self.norm = conv, norm
        # in-loop evaluations of the K runs in one planning call per frame where they can
        # (macdmp.methods.joint); joint_refused: why they could not
        self.joint_eval = joint_eval
        self._joint: JointModel | None = None
        self.joint_refused: str | None = None
        self.trainers = list(trainers)
        self.k = len(trainers)
        t0 = self.trainers[0]
        self.device, self.capture, self.cfg = t0.device, t0.capture, t0.cfg
        # --compile on a GPU: the whole stacked loss and the clipping through torch.compile (on
        # the CPU, Inductor's code for the vmapped backward crashed with torch 2.13; the CPU
        # path stays eager, as --compile's help says)
        self.compiled = t0.compile and self.device.type == "cuda"
        self.loss_names = t0.loss_names
        self.step = t0.step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream: torch.cuda.Stream | None = None
        self.compile_s = 0.0
        self.closed = False
        for tr in self.trainers:
            tr.method.train()
        self._call = _LossCall(t0.method)
        self._gen_names = [n for n, p in t0.method.named_parameters() if p.requires_grad]
        self._probe_gen = torch.Generator(device=self.device).manual_seed(0)
        self._calls = self._record_draws()
        # Every parameter and buffer stacked (copies), tried in one stacked loss; only then do
        # the runs' modules take views of their slices (so a refusal leaves them untouched).
        named = [dict(tr.method.named_parameters()) for tr in self.trainers]
        self.params = {
            n: torch.stack([d[n].detach() for d in named]).requires_grad_(p.requires_grad)
            for n, p in named[0].items()
        }
        bufs = [dict(tr.method.named_buffers()) for tr in self.trainers]
        self.buffers = {n: torch.stack([d[n] for d in bufs]) for n in bufs[0]}
        self._anchor = torch.zeros(self.k, device=self.device)
        self._per_run_factories = False
        self.unbatched_ops: list[str] = []
        self._flat: FlatUpdate | None = None  # set below, for runs of one schedule
        self._unused: list[str] = []
        self._vloss = torch.vmap(self._one_loss, randomness="error")
        self._try_stacked_loss()  # eager: a refusal costs no compilation
        self._max_norm = torch.tensor(
            [float(tr.cfg.grad_clip) for tr in self.trainers], device=self.device
        )
        self._clip = clip_stacked
        if self.compiled:
            # vmap inside the compiled function (Dynamo traces it whole; vmap of a compiled
            # function is not supported): forward and backward become one graph each, compiled
            # at the first (warm-up) step
            one = self._one_loss
            self._vloss = torch.compile(lambda *a: torch.vmap(one, randomness="error")(*a))
            self._clip = torch.compile(clip_stacked)
        self.acc = torch.stack([tr.acc for tr in self.trainers])
        # One schedule for all (the seeds of one configuration): one Adam and one EMA update
        # over the stacked tensors (both elementwise: each slice is updated as the run alone
        # would update it); else each run's own optimiser and EMA on its slice.
        self.shared = all(_schedule(tr.cfg) == _schedule(t0.cfg) for tr in self.trainers)
        self._grads = [self.params[n] for n in self._gen_names]
        if self.shared:
            emas = [dict(tr.ema.named_parameters()) for tr in self.trainers]
            self.ema = [torch.stack([e[n].detach() for e in emas]) for n in self._gen_names]
            self.step_t = t0.step_t.clone()
            self.lr_t = t0.lr_t.clone()
            cuda = self.device.type == "cuda"
            kw = {"fused": True, "capturable": True} if cuda else {"foreach": True}
            self.opt = torch.optim.Adam(self._grads, lr=self.lr_t if cuda else t0.cfg.lr, **kw)
            self._stack_adam_state()
        # update="flat" (UPDATES): the clipping, Adam and the EMA over (K, P) buffers; not
        # where the loss leaves a parameter unused (Adam must leave it as it is)
        if update == "flat" and self.shared and not self._unused:
            self._flat = FlatUpdate(self._grads, self.ema, self.opt, runs=self.k)
        self.update = "flat" if self._flat is not None else "tensors"  # the one it takes
        for k, tr in enumerate(self.trainers):
            for n, t in self.params.items():
                _set_tensor(tr.method, n, t.detach()[k], buffer=False)
            for n, t in self.buffers.items():
                _set_tensor(tr.method, n, t[k], buffer=True)
            if self.shared:
                for p, t in zip(tr.ema_params, self.ema, strict=True):
                    p.data = t[k]
            tr.acc = self.acc[k]

    def _stack_adam_state(self) -> None:
        """The runs' Adam state (resumed runs have one) as the stacked optimiser's."""
        states = [[tr.opt.state.get(p, {}) for p in tr.params] for tr in self.trainers]
        for i, leaf in enumerate(self._grads):
            per_run = [st[i] for st in states]
            if not per_run[0]:
                if any(per_run):
                    raise NotStackable("optimizer: some runs have Adam state, others none")
                continue
            steps = {float(st["step"]) for st in per_run}
            if len(steps) != 1:
                raise NotStackable(f"optimizer: the runs' Adam step counts differ ({steps})")
            self.opt.state[leaf] = {
                "step": per_run[0]["step"].clone(),
                "exp_avg": torch.stack([st["exp_avg"] for st in per_run]),
                "exp_avg_sq": torch.stack([st["exp_avg_sq"] for st in per_run]),
            }

    def _run_adam_state(self, k: int) -> dict:
        """Run k's slice of the stacked Adam state, as its own optimiser keeps it (copies)."""
        out = {}
        for i, leaf in enumerate(self._grads):
            st = self.opt.state.get(leaf)
            if st:
                out[i] = {
                    "step": st["step"].clone(),
                    "exp_avg": st["exp_avg"][k].clone(),
                    "exp_avg_sq": st["exp_avg_sq"][k].clone(),
                }
        return out

    # -- the stacked loss -------------------------------------------------------------------
    def _record_draws(self) -> list:
        """The loss's generator calls, recorded on one batch drawn from a throwaway generator."""
        t0 = self.trainers[0]
        gen = torch.Generator(device=self.device).manual_seed(0)
        batch = t0.sampler.sample(t0.cfg.batch_size, gen)
        rec = _RecordDraws()
        with rec:
            t0.method.loss(batch, gen)
        return rec.calls

    def _one_loss(self, params, buffers, batch, draws, anchor):
        anchor = anchor if self._per_run_factories else None
        # compiled: the products follow the matmul precision in force (no precision switch to
        # trace); else TF32 where cuDNN's would be
        tf32 = False if self.compiled else None
        replay = _ReplayDraws(self._calls, draws, anchor, self.conv, tf32, self.norm)
        with replay:
            out = torch.func.functional_call(
                self._call,
                (
                    {"m." + n: v for n, v in params.items()},
                    {"m." + n: v for n, v in buffers.items()},
                ),
                (batch, self._probe_gen),
            )
        if replay.i != len(self._calls):
            raise NotStackable(f"the loss drew {replay.i} times, {len(self._calls)} recorded")
        return tuple(out[n] for n in self.loss_names)

    def _draw(self, gens: Sequence[torch.Generator]) -> tuple[dict, list]:
        """Each run's batch, then its loss's draws, from its generator (the order alone)."""
        batches, draws = [], []
        for tr, gen in zip(self.trainers, gens, strict=True):
            batches.append(tr.sampler.sample(tr.cfg.batch_size, gen))
            draws.append([f(*a, **kw, generator=gen) for f, a, kw in self._calls])
        batch = {key: torch.stack([b[key] for b in batches]) for key in batches[0]}
        return batch, [torch.stack(d) for d in zip(*draws, strict=True)]

    def _losses(self, batch: dict, draws: list) -> tuple[torch.Tensor, ...]:
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
            if self.trainers[0].bf16
            else contextlib.nullcontext()
        )
        params = self.params
        if self._flat is not None:  # the weights as views of the flat buffer (its gradient)
            params = {**params, **dict(zip(self._gen_names, self._flat.pieces(), strict=True))}
        with amp:
            return self._vloss(params, self.buffers, batch, draws, self._anchor)

    def _try_stacked_loss(self) -> None:
        """One stacked loss and its gradient on throwaway draws: refuse a loss vmap cannot
        batch. A loss that writes per-run values into a tensor it made is retried with its
        new tensors made per run."""
        gens = [torch.Generator(device=self.device).manual_seed(k) for k in range(self.k)]
        leaves = [self.params[n] for n in self._gen_names]
        for per_run in (False, True):
            self._per_run_factories = per_run
            try:
                batch, draws = self._draw(gens)
                with self.trainers[0]._arithmetic(), warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    out = self._losses(batch, draws)
                    grads = torch.autograd.grad(out[0].sum(), leaves, allow_unused=True)
                self._unused = [n for n, g in zip(self._gen_names, grads, strict=True) if g is None]
                self._note_unbatched(seen)
                return
            except NotStackable:
                raise
            except RuntimeError as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if not per_run and "inplace" in text:
                    continue
                raise NotStackable(
                    f"{self.trainers[0].method.name}: its loss cannot be vmapped ({text[:300]})"
                ) from exc

    def _note_unbatched(self, seen: list[warnings.WarningMessage]) -> None:
        """Operations vmap runs one run at a time (no batching rule: correct, slower)."""
        for w in seen:
            m = _UNBATCHED.search(str(w.message))
            if m is None:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif m.group(1) not in self.unbatched_ops:
                self.unbatched_ops.append(m.group(1))
        if self.unbatched_ops:
            warnings.warn(
                f"{self.trainers[0].method.name} stacked: vmap has no batching rule for "
                f"{', '.join(self.unbatched_ops)}; these run once per run (correct, slower)",
                stacklevel=3,
            )

    # -- one step --------------------------------------------------------------------------
    def _body(self, capturing: bool) -> None:
        """The whole stacked step, with no host synchronisation (capturable)."""
        cuda = self.device.type == "cuda"
        batch, draws = self._draw([tr.gen for tr in self.trainers])
        out = self._losses(batch, draws)
        if not capturing:
            for t in self.params.values():
                t.grad = None
            if self._flat is not None:
                self._flat.leaf.grad = None
        out[0].sum().backward()  # the runs are independent: each slice gets its own gradient
        for k, tr in enumerate(self.trainers):
            for leaf, p in zip(self._grads, tr.params, strict=True):
                g = leaf.grad  # None: a parameter the loss does not use
                p.grad = None if g is None else g[k]
        if self._flat is None:
            # each run's gradient clipped to its own norm, all runs at once (the views above
            # share it); the flat update clips the buffer's gradient itself
            self._clip([g.grad for g in self._grads if g.grad is not None], self._max_norm)
        if self.shared:
            self._shared_tail(cuda)
        else:
            self._per_run_tail(cuda)
        vals = [o.detach().to(torch.float64) for o in out]
        ones = torch.ones(self.k, dtype=torch.float64, device=self.device)
        self.acc += torch.stack([*vals, ones], dim=1)

    def _shared_tail(self, cuda: bool) -> None:
        """Trainer._body's tail for runs of one schedule: one Adam step and one EMA update
        over the stacked tensors."""
        cfg = self.cfg
        if cuda:
            self.lr_t.copy_(cfg.lr * lr_factor_tensor(cfg, self.step_t))
        if self._flat is not None:
            self._flat.adam(self._max_norm)
            self.step_t += 1
            self._flat.average(ema_weight(cfg, self.step_t, self.step))
        else:
            self.opt.step()
            self.step_t += 1
            ema_update(self.ema, self._grads, cfg, self.step_t, self.step)
        for tr in self.trainers:
            tr.method.after_step()

    def _per_run_tail(self, cuda: bool) -> None:
        """Trainer._body's tail, run by run, on each run's slice."""
        for tr in self.trainers:
            cfg = tr.cfg
            # the rest as Trainer._body: schedule, Adam, EMA, after_step, per run
            if cuda:
                tr.lr_t.copy_(cfg.lr * lr_factor_tensor(cfg, tr.step_t))
            tr.opt.step()
            tr.step_t += 1
            ema_update(tr.ema_params, tr.params, cfg, tr.step_t, tr.step)
            tr.method.after_step()

    def _eager_step(self) -> None:
        if self.device.type != "cuda":
            for tr in self.trainers:
                for group in tr.opt.param_groups:
                    group["lr"] = tr.cfg.lr * lr_factor(tr.cfg, tr.step)
            if self.shared:
                for group in self.opt.param_groups:
                    group["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step)
        with self.trainers[0]._arithmetic():
            self._body(capturing=False)
        self._advance()

    def _advance(self) -> None:
        self.step += 1
        for tr in self.trainers:
            tr.step += 1

    def prepare(self, end: int | None = None) -> None:
        """Capture the stacked step (CUDA), after a few eager warm-up steps (ordinary steps,
        logged and saved as such) that never go past step ``end``."""
        if not self.capture or self.graph is not None:
            return
        dev = self.device
        end = min(tr.cfg.total_steps for tr in self.trainers) if end is None else end
        self.stream = self.stream or torch.cuda.Stream(dev)
        self.stream.wait_stream(torch.cuda.current_stream(dev))
        t0 = time.perf_counter()
        with torch.cuda.stream(self.stream):
            for _ in range(max(min(WARMUP_STEPS_BEFORE_CAPTURE, end - self.step - 1), 0)):
                self._eager_step()
                self.after_step()
        torch.cuda.current_stream(dev).wait_stream(self.stream)
        torch.cuda.synchronize(dev)
        if self.step >= end - 1:
            return
        for t in self.params.values():
            t.grad = None
        if self._flat is not None:
            self._flat.leaf.grad = None
        graph = torch.cuda.CUDAGraph()
        for tr in self.trainers:
            graph.register_generator_state(tr.gen)
        with self.trainers[0]._arithmetic(), torch.cuda.graph(graph, stream=self.stream):
            self._body(capturing=True)
        torch.cuda.synchronize(dev)
        self.graph = graph
        self.compile_s = time.perf_counter() - t0

    def train_step(self) -> None:
        """One stacked step: a graph replay on CUDA (after :meth:`prepare`), else eager."""
        if self.closed:
            raise RuntimeError("this StackedTrainer is closed (its runs were unstacked)")
        if self.graph is not None:
            with torch.cuda.stream(self.stream):
                self.graph.replay()
            self._advance()
        else:
            self._eager_step()

    def sync(self) -> None:
        wait_for_device(self.stream, self.device)

    # -- bookkeeping -----------------------------------------------------------------------
    def save(self, tr: Trainer) -> None:
        """One run's checkpoint, as Trainer.save writes it (its own tensors, not the views of
        the stacked ones: torch.save would write the whole stacked storage)."""
        self.sync()
        if self.shared:
            self._give_back_schedule(tr)
        state = tr.state()
        for part in ("model", "ema"):
            sd = state[part]
            own = type(sd)((key, v.clone()) for key, v in sd.items())
            if hasattr(sd, "_metadata"):
                own._metadata = sd._metadata  # type: ignore[attr-defined]
            state[part] = own
        if self.shared:
            state["optimizer"]["state"] = self._run_adam_state(self.trainers.index(tr))
        state["log_acc"] = tr.acc.detach().clone().cpu()
        tr.write_state(state)  # and best.pt, when an evaluation since the last save was the best

    def _give_back_schedule(self, tr: Trainer) -> None:
        """The shared step counter and learning rate, written back into the run's own."""
        tr.step_t.copy_(self.step_t)
        if self.device.type == "cuda":
            tr.lr_t.copy_(self.lr_t)
        else:
            for group in tr.opt.param_groups:
                group["lr"] = self.opt.param_groups[0]["lr"]

    def save_all(self) -> None:
        for tr in self.trainers:
            self.save(tr)

    def after_step(self) -> list[dict[str, Any] | None]:
        """Each run's logs, evaluation and checkpoint due after the step (Trainer.after_step).
        The runs due for an evaluation at this step are evaluated together, their agents
        planned in one call per frame (:func:`~macdmp.methods.joint.evaluate_jointly`), where
        their method and modules allow it; else one at a time."""
        due = [
            bool(tr.cfg.eval_every)
            and (tr.step % tr.cfg.eval_every == 0 or tr.step == tr.cfg.total_steps)
            for tr in self.trainers
        ]
        evals = self._evaluate([tr for tr, d in zip(self.trainers, due, strict=True) if d])
        recs = []
        for tr, d in zip(self.trainers, due, strict=True):
            cfg, rec = tr.cfg, None
            last = tr.step == cfg.total_steps
            if tr.step % cfg.log_every == 0 or last:
                rec = tr.log()
            ev = evals.pop(0) if d else None
            if ev is not None and rec is not None:
                rec = {**rec, "eval_delay_ms": ev["mean_delay_ms"]}
            if tr.step % cfg.ckpt_every == 0 or last:
                self.save(tr)
            recs.append(rec)
        return recs

    def _evaluate(self, trainers: list[Trainer]) -> list[dict[str, Any] | None]:
        """The in-loop evaluations of ``trainers`` (jointly when all K runs are due and can
        act as one; the reason they cannot is kept in ``joint_refused``)."""
        if len(trainers) < 2 or len(trainers) != self.k or not self.joint_eval:
            return [tr.evaluate() for tr in trainers]
        if self._joint is None and self.joint_refused is None:
            emas = [tr.ema for tr in trainers]
            self.joint_refused = why_not_joint(emas)
            if self.joint_refused is None:
                self._joint = JointModel(emas)
        if self._joint is None:
            return [tr.evaluate() for tr in trainers]
        return evaluate_jointly(trainers, self._joint)

    def close(self) -> None:
        """Unstack: each run's module gets tensors of its own again (its values now), so the
        trainers go on as ordinary ones (alone or packed). The stacked step is gone."""
        if self.closed:
            return
        self.sync()
        for tr in self.trainers:
            for n in self.params:
                _set_tensor(tr.method, n, tr.method.get_parameter(n).detach().clone(), False)
            for n in self.buffers:
                _set_tensor(tr.method, n, tr.method.get_buffer(n).clone(), buffer=True)
            for p in tr.params:
                p.grad = None
            tr.acc = tr.acc.clone()
        if self.shared:
            for k, tr in enumerate(self.trainers):
                for p in tr.ema_params:
                    p.data = p.data.clone()
                self._give_back_schedule(tr)
                run_state = self._run_adam_state(k)
                tr.opt.state.clear()
                for i, p in enumerate(tr.params):
                    if i in run_state:
                        tr.opt.state[p] = run_state[i]
        for tr in self.trainers:  # tensors of their own again: the flat update laid out anew
            tr.lay_out_flat()
        self.graph = None
        self.closed = True

    # -- the loop --------------------------------------------------------------------------
    def run(self, progress: bool = True, stop_after: int | None = None) -> None:
        """Train every run to its total_steps (or ``stop_after`` more steps): stacked up to
        the first run's end, then the runs still going packed. Ctrl-C or SIGTERM: save each
        run's last whole step and raise TrainingInterrupted. The runs are unstacked after."""
        trs = self.trainers
        ends = [
            tr.cfg.total_steps
            if stop_after is None
            else min(tr.cfg.total_steps, tr.step + stop_after)
            for tr in trs
        ]
        end, start = min(ends), self.step
        bar = progress_bar(
            total=sum(tr.cfg.total_steps for tr in trs),
            initial=sum(tr.step for tr in trs),
            desc=f"train stacked x{self.k}",
            disable=not progress,
            unit="step",
        )
        t0 = time.perf_counter()
        starts = [tr.wall_s for tr in trs]
        try:
            with stop_requests() as stop:
                try:
                    if self.step < end:
                        self.prepare(end)
                    while self.step < end and not stop:
                        self.train_step()
                        for tr, s in zip(trs, starts, strict=True):
                            tr.wall_s = s + time.perf_counter() - t0
                        self.after_step()
                        bar.update(self.k)
                    if self.step > start or stop:  # as train_packed: saved where it stops
                        self.save_all()
                finally:
                    bar.close()
                if stop:
                    raise TrainingInterrupted(
                        f"signal {stop.signum}: stopped at step {self.step} ({self.k} stacked "
                        "runs); checkpoints saved, run the same command to resume"
                    )
        finally:
            self.close()
        rest = [tr for tr, e in zip(trs, ends, strict=True) if tr.step < e]
        if rest:  # runs longer than the first to end go on packed, each to its own end
            more = None if stop_after is None else stop_after - (end - start)
            train_packed(rest, progress=progress, stop_after=more)


def train_stacked(
    trainers: Sequence[Trainer], progress: bool = True, stop_after: int | None = None
) -> None:
    """Train runs of one method as one stacked model (:class:`StackedTrainer`); raises
    :class:`NotStackable` (before any step) when they cannot be stacked."""
    StackedTrainer(trainers).run(progress=progress, stop_after=stop_after)


def train_many(
    trainers: Sequence[Trainer], progress: bool = True, stop_after: int | None = None
) -> tuple[str, str]:
    """Train runs stacked when they can be (:func:`train_stacked`), else packed
    (:func:`~macdmp.methods.trainer.train_packed`). Returns ("stacked", "") or ("packed",
    the reason stacking was refused)."""
    if len(trainers) > 1:
        try:
            stacked = StackedTrainer(trainers)
        except NotStackable as exc:
            reason = str(exc)
        else:
            stacked.run(progress=progress, stop_after=stop_after)
            return "stacked", ""
    else:
        reason = "one run"
    train_packed(trainers, progress=progress, stop_after=stop_after)
    return "packed", reason
