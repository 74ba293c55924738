"""MA-CDMP's backbones exported to ONNX and run by ONNX Runtime: the CPU path for few agents.

In eager PyTorch one agent's plan on one CPU core is dominated by per-operator overhead (the
U-Net is hundreds of small operators, and batch-1 convolutions take a slow path). ONNX Runtime
runs the same graph with its own kernels and no Python between them. Two graphs are exported per
batch shape: the noise model eps(x, k) and the classifier's input gradient d J(x, k) / d x, which
classifier guidance needs. The gradient is traced with ``make_fx`` into forward and backward
ATen operators; the backward of a convolution (which ONNX lacks) is written as the transposed
convolution it is. The sampler (``macdmp.diffusion.sample``) is the same; only its two model
calls go through ONNX Runtime (``value_grad``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten


def _conv_input_grad(
    grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed, out_pad, groups, mask
):
    # d conv(x, w) / d x is the transposed convolution of the output gradient with w; only the
    # input's gradient is asked for (the weights are constants here).
    if transposed or mask[1] or mask[2]:
        raise NotImplementedError("export: only the input gradient of a forward convolution")
    pads = [
        i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for i, o, s, p, d, k in zip(
            inp.shape[2:],
            grad_out.shape[2:],
            stride,
            padding,
            dilation,
            weight.shape[2:],
            strict=True,
        )
    ]
    gi = aten.convolution.default(
        grad_out, weight, None, stride, padding, dilation, True, pads, groups
    )
    return gi, None, None


class _Traced(torch.nn.Module):
    def __init__(self, gm: torch.nn.Module) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.gm(x, k)


def _export(fn: torch.nn.Module, x: torch.Tensor, k: torch.Tensor, path: Path) -> None:
    # The exporter logs every stage and warns about optional packages (torchvision); keep the
    # caller's output clean.
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                fn, (x, k), str(path), input_names=["x", "k"], dynamo=True, verbose=False
            )
    finally:
        for lg, lv in zip(quiet, levels, strict=True):
            lg.setLevel(lv)


class OnnxBackbones:
    """eps and grad J of one model for one batch shape, as ONNX Runtime sessions on the CPU."""

    def __init__(self, models: torch.nn.Module, shape: tuple[int, ...], threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency; the GPU image lacks it
            raise ValueError(
                "backend: 'onnx' needs the onnxruntime package (pip install onnxruntime)"
            ) from exc
        x = torch.zeros(shape)
        k = torch.zeros(shape[0], dtype=torch.long)
        eps, cls = models.eps, models.classifier

        def value_grad(xx: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                xg = xx.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(cls(xg, kk).sum(), xg)
            return g

        table = dict(torch._decomp.core_aten_decompositions())
        table[aten.convolution_backward.default] = _conv_input_grad
        with torch.no_grad():
            traced = make_fx(value_grad, tracing_mode="real", decomposition_table=table)(x, k)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory() as tmp:
            _export(eps.eval(), x, k, Path(tmp) / "eps.onnx")
            _export(_Traced(traced).eval(), x, k, Path(tmp) / "grad.onnx")
            # Sessions read the files (and their external weights) when made.
            self._eps = ort.InferenceSession(str(Path(tmp) / "eps.onnx"), opts)
            self._grad = ort.InferenceSession(str(Path(tmp) / "grad.onnx"), opts)
        self.shape = tuple(shape)

    def _run(self, sess, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        feed = {
            "x": np.ascontiguousarray(x.detach().numpy(), dtype=np.float32),
            "k": np.ascontiguousarray(k.numpy(), dtype=np.int64),
        }
        return torch.from_numpy(sess.run(None, feed)[0])

    def eps(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The noise model's prediction, as ``models.eps(x, k)``."""
        return self._run(self._eps, x, k)

    def value_grad(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """d sum(J(x, k)) / d x, as the autograd gradient of ``models.classifier``."""
        return self._run(self._grad, x, k)
