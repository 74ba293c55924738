"""One run's update after the backward (gradient clipping, Adam, the EMA) over flat buffers.

A paper-preset MA-CDMP step has about 340 parameter tensors. Clipping, Adam and the EMA over
them as lists (multi-tensor kernels, each launch a few dozen tensors) took 34 launches and
0.74 ms of a 4.4 ms step on one H200, all on the step's critical path
(``benchmarks/step_profile.py --top``). Here the parameters, their EMA, Adam's two moments and a
copy of the gradients each live in one flat buffer, and every parameter tensor (and its Adam
state) is a view into its buffer; the update is then a handful of kernels over four long
tensors: the gradients' copy, their norm, the scaling, one Adam step, one EMA step.

The same arithmetic as the per-tensor update, element by element: the same Adam
(``torch.optim.Adam``, over the flat buffer instead of the list), the same total norm (summed
per tensor first, as ``clip_grad_norm_`` does) and scale, the EMA as a lerp (the CPU path's op;
on CUDA the per-tensor path writes it as sub, mul, add): bit-identical on the CPU. The run's
own optimiser keeps its per-tensor state (views into the flat moments), so checkpoints keep
their format and anything that steps or reads that optimiser directly (the stacked trainer's
per-run tail) sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# every tensor starts on a 256-byte boundary in its buffer (float32), as cuDNN and inductor's
# kernels expect of a tensor of its own; the gaps stay zero (no gradient, no update)
ALIGN = 64


def _offsets(tensors: Sequence[torch.Tensor]) -> tuple[list[int], int]:
    out, at = [], 0
    for t in tensors:
        out.append(at)
        at += -(-t.numel() // ALIGN) * ALIGN
    return out, at


class FlatUpdate:
    """Lays ``params``, ``ema_params`` and the Adam state of ``opt`` (over ``params``, one
    group, no AMSGrad) out in flat buffers, the tensors becoming views into them (``.data`` is
    re-pointed: the same Parameter objects, the same values). :meth:`adam` then does what
    ``clip_grad_norm_`` and ``opt.step()`` do to them, :meth:`average` the EMA update. Build
    it again after anything replaces those tensors (a resumed optimiser state is read here;
    the stacked trainer's ``close``)."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        ema_params: Sequence[torch.Tensor],
        opt: torch.optim.Adam,
    ) -> None:
        if not params or len(ema_params) != len(params) or len(opt.param_groups) != 1:
            raise ValueError("FlatUpdate: needs parameters, one EMA tensor each, one Adam group")
        group = opt.param_groups[0]
        if group["amsgrad"] or group["maximize"] or group.get("differentiable"):
            raise ValueError("FlatUpdate: plain Adam only (no amsgrad, maximize, differentiable)")
        p0 = params[0]
        dev, dtype = p0.device, p0.dtype
        if any(p.device != dev or p.dtype != dtype for p in (*params, *ema_params)):
            raise ValueError("FlatUpdate: every tensor on one device, of one dtype")
        self.params = list(params)
        self.offsets, total = _offsets(params)
        states = [opt.state.get(p, {}) for p in params]
        if any(states) and not all(states):
            raise ValueError("optimizer: some parameters have Adam state, others none")
        fresh = not states[0]
        with torch.no_grad():
            self.param = self._gather(params, total, dev, dtype)
            self.ema = self._gather(ema_params, total, dev, dtype)
            self.grad = torch.zeros(total, device=dev, dtype=dtype)
            self.exp_avg = self._gather(
                None if fresh else [s["exp_avg"] for s in states], total, dev, dtype
            )
            self.exp_avg_sq = self._gather(
                None if fresh else [s["exp_avg_sq"] for s in states], total, dev, dtype
            )
            # Adam's step count: where torch.optim.Adam keeps it (on the device when fused or
            # capturable, else a CPU scalar); one per tensor as views of one vector, written
            # after each flat step, so the run's optimiser always reads the right count
            on_dev = bool(group.get("fused") or group.get("capturable"))
            sdev = dev if on_dev else torch.device("cpu")
            count = 0.0 if fresh else float(states[0]["step"])
            if not fresh and any(float(s["step"]) != count for s in states):
                raise ValueError("optimizer: the parameters' Adam step counts differ")
            self.count = torch.full((), count, dtype=torch.float32, device=sdev)
            self.counts = torch.full((len(params),), count, dtype=torch.float32, device=sdev)
            for p, v in zip(params, self._views(self.param), strict=True):
                p.data = v
            for e, v in zip(ema_params, self._views(self.ema), strict=True):
                e.data = v
            self.grads = self._views(self.grad)
            for i, (p, m, v) in enumerate(
                zip(params, self._views(self.exp_avg), self._views(self.exp_avg_sq), strict=True)
            ):
                opt.state[p] = {"step": self.counts[i], "exp_avg": m, "exp_avg_sq": v}
        # the Adam that steps the flat buffer: the run optimiser's settings, its learning rate
        # (a device tensor on CUDA, the same object; a float on the CPU, copied each step)
        self.leaf = torch.nn.Parameter(self.param, requires_grad=True)
        self.leaf.grad = self.grad
        keys = ("betas", "eps", "weight_decay", "foreach", "fused", "capturable")
        kw = {k: group[k] for k in keys}
        self.opt = opt
        self.flat_opt = torch.optim.Adam([self.leaf], lr=group["lr"], **kw)
        self.flat_opt.state[self.leaf] = {
            "step": self.count,
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
        }

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [
            flat[o : o + p.numel()].view(p.shape)
            for p, o in zip(self.params, self.offsets, strict=True)
        ]

    def _gather(self, tensors, total: int, dev, dtype) -> torch.Tensor:
        flat = torch.zeros(total, device=dev, dtype=dtype)
        if tensors is not None:
            for t, o in zip(tensors, self.offsets, strict=True):
                flat[o : o + t.numel()].copy_(t.detach().reshape(-1))
        return flat

    def ready(self) -> bool:
        """Whether every parameter has a gradient (else the per-tensor update must run: Adam
        leaves a parameter without one untouched)."""
        return all(p.grad is not None for p in self.params)

    def adam(self, max_norm: float) -> None:
        """Clip the gradients to ``max_norm`` (their total 2-norm, as ``clip_grad_norm_``) and
        take one Adam step."""
        grads = [p.grad for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.grads, grads)
            # the per-tensor norms first, as clip_grad_norm_ (one reduction over the buffer
            # sums in another order: no faster on an H200, and not the per-tensor numbers)
            total = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
            self.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        self.flat_opt.param_groups[0]["lr"] = self.opt.param_groups[0]["lr"]
        self.flat_opt.step()
        with torch.no_grad():
            self.counts.copy_(self.count.expand_as(self.counts))

    def average(self, weight: torch.Tensor | float) -> None:
        """The EMA toward the weights with ``weight`` (a 0-d device tensor on CUDA: no host
        synchronisation; a float on the CPU)."""
        with torch.no_grad():
            self.ema.lerp_(self.param, weight)
