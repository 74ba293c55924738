"""One noise-model forward for one agent on one CPU core: eager PyTorch, ONNX Runtime and
torch.compile (inductor), which is why `backend=onnx` is the CPU path (docs/guide/realtime.md).

    python benchmarks/cpu_backbones.py [--preset paper] [--no-compile]

Untrained weights of the preset's architecture; median wall time of 100 calls after warm-up,
with the time each runner takes to get ready (export, compile).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows


def median_ms(fn, n: int = 100) -> float:
    for _ in range(5):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    cfg = make_config(a.preset)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    m = PlannerModels(cfg, data.stats, data.rbs).eval().requires_grad_(False)
    x = torch.randn(1, cfg.horizon, cfg.channels)
    k = torch.full((1,), 5)
    print(f"preset {a.preset}, one agent, one thread; eps forward, median of 100 calls")
    print("| runner | ms per forward | ready in (s) |\n|---|---|---|")
    with torch.inference_mode():
        print(f"| eager PyTorch | {median_ms(lambda: m.eps(x, k)):.2f} | 0 |")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        torch.onnx.export(m.eps, (x, k), str(Path(tmp) / "e.onnx"), input_names=["x", "k"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(Path(tmp) / "e.onnx"), opts)
        ready = time.perf_counter() - t0
    feed = {"x": x.numpy(), "k": k.numpy()}
    print(f"| ONNX Runtime {ort.__version__} | {median_ms(lambda: sess.run(None, feed)):.2f} | "
          f"{ready:.0f} |")  # fmt: skip
    if not a.no_compile:
        t0 = time.perf_counter()
        eps = torch.compile(m.eps)
        with torch.inference_mode():
            eps(x, k)
            ready = time.perf_counter() - t0
            ms = median_ms(lambda: eps(x, k))
            print(f"| torch.compile (inductor) | {ms:.2f} | {ready:.0f} |")


if __name__ == "__main__":
    main()
