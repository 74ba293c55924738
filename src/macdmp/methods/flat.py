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

Stacked runs (``runs=K``, :mod:`macdmp.methods.stacked`): every tensor is a (K, ...) stack of
K runs' tensors, and each buffer is (K, P), run k's tensors laid out along row k, so that each
run's gradient norm is one reduction along its row and its clipping one scaling of the row.
The stacked tensors' values live in the rows (their ``.data`` views into them, each run's slice
contiguous). The loss reads them through :meth:`FlatUpdate.pieces`, views of the weights'
buffer taken by one ``split`` along the rows, so the backward writes the whole (K, P) gradient
by one concatenation. (With the stacked tensors themselves as the parameters, their gradients
would be tensors of their own, to be copied into the buffer once more, and autograd would lay
many of them out anew first: the weights are strided by P and the products' backward hands
their gradients back transposed.)
Each run is clipped to its own norm, summed over its row in one reduction (``clip_grad_norm_``
sums the tensors' norms: the same norm up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# every tensor starts on a 256-byte boundary in its buffer (float32), as cuDNN and inductor's
# kernels expect of a tensor of its own; the gaps stay zero (no gradient, no update)
ALIGN = 64
# stacked runs: each run's slice of a tensor starts on a 16-byte boundary of its row (float32;
# the vector width of the elementwise kernels and of cuBLAS's tensor-op kernels), no wider:
# every gap is a piece of the split the loss reads through, and its backward fills each gap's
# gradient with zeros, one kernel a gap (64 floats: 55 gaps in the paper preset; 4: one)
ROW_ALIGN = 4


def _offsets(sizes: Sequence[int], align: int) -> tuple[list[int], int]:
    out, at = [], 0
    for n in sizes:
        out.append(at)
        at += -(-n // align) * align
    return out, at


class FlatUpdate:
    """Lays ``params``, ``ema_params`` and the Adam state of ``opt`` (over ``params``, one
    group, no AMSGrad) out in flat buffers, the tensors becoming views into them (``.data`` is
    re-pointed: the same Parameter objects, the same values). :meth:`adam` then does what
    ``clip_grad_norm_`` and ``opt.step()`` do to them, :meth:`average` the EMA update. Build
    it again after anything replaces those tensors (a resumed optimiser state is read here;
    the stacked trainer's ``close``). With ``runs=K`` the tensors are K runs' stacks, laid
    out run by run along the rows of (K, P) buffers, and :meth:`adam` clips each run to its
    own ``max_norm[k]``."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        ema_params: Sequence[torch.Tensor],
        opt: torch.optim.Adam,
        runs: int | None = None,
    ) -> None:
        if not params or len(ema_params) != len(params) or len(opt.param_groups) != 1:
            raise ValueError("FlatUpdate: needs parameters, one EMA tensor each, one Adam group")
        if runs is not None and (
            runs < 1 or any(t.dim() == 0 or t.shape[0] != runs for t in (*params, *ema_params))
        ):
            raise ValueError(f"FlatUpdate: runs={runs} needs every tensor stacked as ({runs}, ...)")
        group = opt.param_groups[0]
        if group["amsgrad"] or group["maximize"] or group.get("differentiable"):
            raise ValueError("FlatUpdate: plain Adam only (no amsgrad, maximize, differentiable)")
        p0 = params[0]
        dev, dtype = p0.device, p0.dtype
        if any(p.device != dev or p.dtype != dtype for p in (*params, *ema_params)):
            raise ValueError("FlatUpdate: every tensor on one device, of one dtype")
        self.params = list(params)
        self.runs = runs
        k = runs or 1
        self.sizes = [p.numel() // k for p in params]  # one run's elements of each tensor
        self.offsets, row = _offsets(self.sizes, ROW_ALIGN if runs else ALIGN)
        total = (k, row) if runs else row
        states = [opt.state.get(p, {}) for p in params]
        if any(states) and not all(states):
            raise ValueError("optimizer: some parameters have Adam state, others none")
        fresh = not states[0]
        with torch.no_grad():
            self.param = self._gather(params, total, dev, dtype)
            self.ema = self._gather(ema_params, total, dev, dtype)
            # stacked: the gradient is the one the backward writes through pieces()
            self.grad = None if runs else torch.zeros(total, device=dev, dtype=dtype)
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
            self.grads = [] if runs else self._views(self.grad)
            # stacked: the widths along a row that pieces() splits it into, each tensor's
            # and the gaps between them (which no loss reads: their gradient stays zero)
            self._widths: list[int] = []
            self._is_tensor: list[bool] = []
            ends = [*self.offsets[1:], row]
            for o, n, end in zip(self.offsets, self.sizes, ends, strict=True) if runs else ():
                self._widths.append(n)
                self._is_tensor.append(True)
                if end > o + n:
                    self._widths.append(end - o - n)
                    self._is_tensor.append(False)
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
            flat[..., o : o + n].view(p.shape)
            for p, o, n in zip(self.params, self.offsets, self.sizes, strict=True)
        ]

    def _gather(self, tensors, total, dev, dtype) -> torch.Tensor:
        flat = torch.zeros(total, device=dev, dtype=dtype)
        if tensors is not None:
            for t, o, n in zip(tensors, self.offsets, self.sizes, strict=True):
                flat[..., o : o + n].copy_(t.detach().reshape(*flat.shape[:-1], n))
        return flat

    def pieces(self) -> list[torch.Tensor]:
        """Stacked runs: the stacked tensors as views of the weights' buffer (``leaf``), with
        autograd: a loss over them leaves the whole (K, P) gradient in ``leaf.grad`` (set it
        to None before the backward: the new gradient is then taken, not added)."""
        if not self.runs:
            raise ValueError("FlatUpdate.pieces: stacked runs only (runs=K)")
        parts = self.leaf.split(self._widths, dim=1)
        views = (v for v, t in zip(parts, self._is_tensor, strict=True) if t)
        return [v.view(p.shape) for v, p in zip(views, self.params, strict=True)]

    def ready(self) -> bool:
        """Whether every parameter has a gradient (else the per-tensor update must run: Adam
        leaves a parameter without one untouched). Stacked runs: whether the backward wrote
        the buffer's gradient (their trainer checks that every tensor is used)."""
        if self.runs:
            return self.leaf.grad is not None
        return all(p.grad is not None for p in self.params)

    def adam(self, max_norm: float | torch.Tensor) -> None:
        """Clip the gradients to ``max_norm`` (their total 2-norm, as ``clip_grad_norm_``; with
        ``runs``, run k's to ``max_norm[k]``, a (K,) tensor) and take one Adam step."""
        with torch.no_grad():
            if self.runs:  # the gradient the backward wrote through pieces()
                grad = self.leaf.grad
                total = torch.linalg.vector_norm(grad, dim=1)
                grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0)[:, None])
            else:
                grads = [p.grad for p in self.params]
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
