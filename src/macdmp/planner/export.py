"""MA-CDMP's backbones exported to ONNX and run by ONNX Runtime: the CPU path for few agents.

In eager PyTorch one agent's plan on one CPU core is dominated by per-operator overhead (the
U-Net is hundreds of small operators, and batch-1 convolutions take a slow path). ONNX Runtime
runs the same graph with its own kernels and no Python between them. Two graphs are exported per
batch shape, each when first called: the noise model eps(x, k) (eps(x, k, cond, keep) for a
model trained for classifier-free guidance, whose conditional and unconditional halves come as
one call of twice the rows) and the classifier's input gradient d J(x, k) / d x, which
classifier guidance needs. The gradient is traced with ``make_fx`` into forward and backward
ATen operators; the backward of a convolution (which ONNX lacks) is written as the transposed
convolution it is. The sampler (``macdmp.diffusion.sample``) is the same; only its two model
calls go through ONNX Runtime (``value_grad``).
"""

from __future__ import annotations

import importlib
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


class _CondEps(torch.nn.Module):
    """eps(x, k, cond, keep) with all four as inputs (the exporter needs a module)."""

    def __init__(self, eps: torch.nn.Module) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x, k, cond, keep):  # type: ignore[no-untyped-def]
        return self.eps(x, k, cond, keep)


def _export(fn: torch.nn.Module, inputs: dict[str, torch.Tensor], path: Path) -> None:
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
                fn,
                tuple(inputs.values()),
                str(path),
                input_names=list(inputs),
                dynamo=True,
                verbose=False,
            )
    finally:
        for lg, lv in zip(quiet, levels, strict=True):
            lg.setLevel(lv)


class OnnxBackbones:
    """eps and grad J of one model for one batch shape, as ONNX Runtime sessions on the CPU.

    Each graph is exported the first time it is called for a number of rows (40-80 s for the
    paper preset on a shared 2-core machine): classifier-free guidance calls eps with twice the
    rows and never the gradient; classifier guidance calls both with the batch's rows."""

    def __init__(self, models: torch.nn.Module, shape: tuple[int, ...], threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency; the GPU image lacks it
            raise ValueError(
                "backend: 'onnx' needs the onnxruntime package (pip install onnxruntime)"
            ) from exc
        self._ort = ort
        self._models = models
        self._threads = threads
        self._sessions: dict[tuple[str, int], object] = {}
        self.cond_dim = int(getattr(models.cfg, "cond_dim", 0))
        self.shape = tuple(shape)

    def _session(self, kind: str, rows: int):  # type: ignore[no-untyped-def]
        key = (kind, rows)
        if key in self._sessions:
            return self._sessions[key]
        x = torch.zeros((rows, *self.shape[1:]))
        k = torch.zeros(rows, dtype=torch.long)
        inputs = {"x": x, "k": k}
        if kind == "eps" and self.cond_dim:
            inputs |= {"cond": torch.zeros(rows, self.cond_dim), "keep": torch.ones(rows)}
            fn: torch.nn.Module = _CondEps(self._models.eps).eval()
        elif kind == "eps":
            fn = self._models.eps.eval()
        else:
            cls = self._models.classifier

            def value_grad(xx: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
                with torch.enable_grad():
                    xg = xx.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(cls(xg, kk).sum(), xg)
                return g

            table = dict(torch._decomp.core_aten_decompositions())
            table[aten.convolution_backward.default] = _conv_input_grad
            with torch.no_grad():
                traced = make_fx(value_grad, tracing_mode="real", decomposition_table=table)(x, k)
            fn = _Traced(traced).eval()
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{kind}.onnx"
            _export(fn, inputs, path)
            # the session reads the file (and its external weights) when made
            self._sessions[key] = ort.InferenceSession(str(path), opts)
        return self._sessions[key]

    @staticmethod
    def _run(sess, **inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        feed = {
            name: np.ascontiguousarray(
                t.detach().numpy(), dtype=np.int64 if name == "k" else np.float32
            )
            for name, t in inputs.items()
        }
        return torch.from_numpy(sess.run(None, feed)[0])

    def eps(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        cond: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The noise model's prediction, as ``models.eps(x, k[, cond, keep])``."""
        if self.cond_dim:
            if cond is None or keep is None:
                raise ValueError("eps: this model takes a return condition and its keep mask")
            return self._run(self._session("eps", x.shape[0]), x=x, k=k, cond=cond, keep=keep)
        return self._run(self._session("eps", x.shape[0]), x=x, k=k)

    def value_grad(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """d sum(J(x, k)) / d x, as the autograd gradient of ``models.classifier``."""
        return self._run(self._session("grad", x.shape[0]), x=x, k=k)


# --- The whole plan as one graph (backends "fused" and "openvino") --------------------------
#
# backend "onnx" calls ONNX Runtime once per solver step (twice the rows for classifier-free
# guidance) and runs the solver, the pinning and the inverse dynamics in Python between the
# calls: on one core that glue cost as much as the backbones. Backend "fused" traces one whole
# planning call (normalisation, the warm start's shift and re-noising, every solver step with
# its guidance, the inverse dynamics) with ``make_fx`` into a single graph of ATen operators, for
# one setting (solver, steps, warm level, guidance, target) and batch shape, and exports it; a
# decision is then one ``session.run``. The traced code is the eager one (``sample`` and the
# models), so the plans are the eager plans to float rounding. The levels, the time embeddings
# and the return condition are constants of the graph, which ONNX Runtime folds away. Two
# rewrites make ONNX Runtime's kernels fast at these sizes, with the same arithmetic:
# - 1-D convolutions become 2-D ones of height 1: ONNX Runtime's blocked (NCHWc) convolution
#   kernels handle 2-D only, and are 3-8x faster than its 1-D path here;
# - Mish becomes x tanh(log(1 + e^x)): ONNX Runtime has no CPU kernel for Mish (it expands it
#   into a slow Softplus and cannot fold it where its input is constant).
# Backend "openvino" runs the same exported graph in OpenVINO instead, which compiles it into
# fewer kernels (the group norms, Mish and adds fused): about 0.6 ms of one core a decision for
# fast-steer against ONNX Runtime's 1 ms (docs/guide/realtime.md).


def _conv_as_2d(inp, weight, bias, stride, padding, dilation, transposed, out_pad, groups):  # type: ignore[no-untyped-def]
    if inp.dim() != 3:
        return NotImplemented
    y = aten.convolution.default(
        inp.unsqueeze(2),
        weight.unsqueeze(2),
        bias,
        [1, *stride],
        [0, *padding],
        [1, *dilation],
        transposed,
        [0, *out_pad],
        groups,
    )
    return y.squeeze(2)


def _mish(x: torch.Tensor) -> torch.Tensor:
    # exp overflows to inf for x > 88, where log gives inf and tanh 1: mish(x) = x, as it is
    return x * torch.tanh(torch.log(torch.exp(x) + 1.0))


class _Fused(torch.nn.Module):
    def __init__(self, gm: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.gm = gm
        self.names = names

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gm(*args)


# the runtimes that run the fused graph: ONNX Runtime (backend "fused") and OpenVINO (backend
# "openvino"), which fuses the group norms, Mish and adds into fewer, larger kernels
RUNTIMES = ("onnxruntime", "openvino")


class FusedPlanner:
    """One planning call of :func:`macdmp.planner.plan.plan_batch` for one setting and batch
    shape as one ONNX graph on the CPU, run by ONNX Runtime (backend "fused") or OpenVINO
    (backend "openvino", ``runtime="openvino"``).

    ``plan_fn(obs, mf, noise, prev)`` is the eager planning call on tensors: (A, obs) raw
    observations, their (A, obs) mean fields (None for a model without the mean field), the
    solver's one Gaussian draw (B, H, C), the previous plans (A, H, C) (None for a cold start);
    it returns (actions (A,), plans (B', H, C) in model space). It is traced once, here, with
    example inputs of those shapes, and exported (tens of seconds for ``fast-steer`` on a
    shared 2-core machine). The call must not take gradients: classifier guidance's gradient is not
    traced here (backend "onnx" exports it); classifier-free guidance, unguided plans and
    candidates scored by the classifier's forward are."""

    def __init__(  # type: ignore[no-untyped-def]
        self, plan_fn, examples: dict[str, torch.Tensor], threads: int = 1,
        runtime: str = "onnxruntime",
    ) -> None:  # fmt: skip
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime: must be one of {RUNTIMES} (got {runtime!r})")
        try:
            rt = importlib.import_module(runtime)
        except ImportError as exc:  # pragma: no cover - the actor's Speed checks it first
            msg = f"runtime: {runtime!r} needs the {runtime} package (pip install {runtime})"
            raise ValueError(msg) from exc
        names = tuple(examples)
        # Forward operators only (no classifier gradient): group norm stays whole and exports
        # as one InstanceNormalization.
        table = {aten.convolution.default: _conv_as_2d, aten.mish.default: _mish}

        def fn(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return plan_fn(**dict(zip(names, args, strict=True)))

        with torch.no_grad():
            # the schedule's constants are read with .item() while tracing: real tensors, so
            # their values go into the graph as constants
            traced = make_fx(
                fn, decomposition_table=table, tracing_mode="real",
                _error_on_data_dependent_ops=False,
            )(*examples.values())  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "plan.onnx"
            _export(_Fused(traced, names).eval(), dict(examples), path)
            # both runtimes read the file (and its external weights) here, into memory
            if runtime == "openvino":
                self._run = _openvino_run(rt, path, names, threads)
            else:
                self._run = _onnxruntime_run(rt, path, threads)
        self.names = names

    def __call__(self, **inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions, plans) for float32 numpy inputs named as the examples."""
        actions, z = self._run(inputs)
        return actions, z


def _onnxruntime_run(ort, path: Path, threads: int):  # type: ignore[no-untyped-def]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # constant folding reports every node it leaves alone
    session = ort.InferenceSession(str(path), opts)
    outputs = [o.name for o in session.get_outputs()]
    return lambda inputs: session.run(outputs, inputs)


def _openvino_run(ov, path: Path, names: tuple[str, ...], threads: int):  # type: ignore[no-untyped-def]
    core = ov.Core()
    # read the weights into memory (not mapped from the temporary file); float32 arithmetic
    # (no bf16 or f16 inference where the CPU has it), the caller's thread count, one stream
    core.set_property({"ENABLE_MMAP": False})
    compiled = core.compile_model(
        core.read_model(str(path)),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    order = [i.get_any_name() for i in compiled.inputs]
    if sorted(order) != sorted(names):  # pragma: no cover - the exporter keeps the names
        raise RuntimeError(f"openvino: the graph's inputs {order} are not {list(names)}")
    request = compiled.create_infer_request()
    # The request's own buffers as numpy views: a call writes its inputs into them and copies
    # the outputs out (the next call overwrites them). Passing a dict to infer() instead costs
    # about 0.2 ms a call in OpenVINO's Python input dispatch, 40% of the graph's own time.
    ins = [(n, request.get_input_tensor(i).data) for i, n in enumerate(order)]
    outs = [request.get_output_tensor(i) for i in range(len(compiled.outputs))]

    def run(inputs):  # type: ignore[no-untyped-def]
        for n, buf in ins:
            buf[...] = inputs[n]
        request.infer()
        return [t.data.copy() for t in outs]

    return run
