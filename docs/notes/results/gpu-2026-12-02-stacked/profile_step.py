"""Where the stacked step's time goes: CUDA kernel time by kernel, stacked K runs against one.

    PYTHONPATH=src python docs/notes/results/gpu-2026-12-02-stacked/profile_step.py [--k 8]

Captured steps/s of one run and of K stacked runs (both ways of computing the convolutions);
eager stacked steps (after warm-up) under torch.profiler; then a micro-benchmark of the U-Net's
convolution shapes batched over K runs: vmap of conv1d (cuDNN grouped convolution) against
the same convolution as unfold + batched matmul.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from macdmp.methods import Trainer
from macdmp.methods.stacked import StackedTrainer
from macdmp.planner import make_config
from macdmp.planner.synthetic import SyntheticWindows


def profile(step, n: int, label: str, rows: int) -> None:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) / n / 1000
    print(f"\n## {label}: {total:.2f} ms of kernel time per step")
    print(events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70))


def im2col_conv(x, w, b, stride: int, pad: int):
    cols = F.pad(x, (pad, pad)).unfold(2, w.shape[-1], stride)  # (B, C, L, k)
    return torch.einsum("bclk,ock->bol", cols, w) + b[:, None]


def time_fn(fn, n: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    z.record()
    torch.cuda.synchronize()
    return a.elapsed_time(z) / n


def conv_row(k: int, c_in: int, c_out: int, length: int, ks: int) -> list[float]:
    x = torch.randn(k, 64, c_in, length, device="cuda", requires_grad=True)
    w = torch.randn(k, c_out, c_in, ks, device="cuda", requires_grad=True)
    b = torch.randn(k, c_out, device="cuda", requires_grad=True)
    pad = ks // 2

    def alone():
        for i in range(k):
            F.conv1d(x[i], w[i], b[i], padding=pad).sum().backward()

    grouped = torch.vmap(lambda x, w, b: F.conv1d(x, w, b, padding=pad))
    unf = torch.vmap(lambda x, w, b: im2col_conv(x, w, b, 1, pad))
    return [
        time_fn(alone),
        time_fn(lambda: grouped(x, w, b).sum().backward()),
        time_fn(lambda: unf(x, w, b).sum().backward()),
    ]


def norm_row(k: int, c: int, length: int) -> list[float]:
    x = torch.randn(k, 64, c, length, device="cuda", requires_grad=True)
    w = torch.randn(k, c, device="cuda", requires_grad=True)
    b = torch.randn(k, c, device="cuda", requires_grad=True)

    def manual(x, w, b):
        g = x.reshape(x.shape[0], 8, -1)
        var, mean = torch.var_mean(g, dim=-1, unbiased=False, keepdim=True)
        y = ((g - mean) * torch.rsqrt(var + 1e-5)).reshape(x.shape)
        return y * w[:, None] + b[:, None]

    def alone():
        for i in range(k):
            F.group_norm(x[i], 8, w[i], b[i]).sum().backward()

    vm = torch.vmap(lambda x, w, b: F.group_norm(x, 8, w, b))
    man = torch.vmap(manual)
    return [
        time_fn(alone),
        time_fn(lambda: vm(x, w, b).sum().backward()),
        time_fn(lambda: man(x, w, b).sum().backward()),
    ]


def micro(k: int) -> None:
    print(f"\n## conv1d forward+backward, batch 64, K={k} runs: ms per call")
    print("| C_in | C_out | L | kernel | alone x K | vmap (grouped) | vmap unfold+bmm |")
    print("|---|---|---|---|---|---|---|")
    shapes = [(8, 32, 16, 5), (32, 32, 16, 5), (64, 64, 8, 5), (128, 128, 4, 5),
              (256, 256, 2, 5), (512, 128, 4, 5), (256, 64, 8, 5), (64, 64, 8, 1)]  # fmt: skip
    for shape in shapes:
        t = conv_row(k, *shape)
        print("| " + " | ".join(map(str, shape)) + " | " + " | ".join(f"{v:.3f}" for v in t) + " |")
    print(f"\n## group_norm (8 groups) forward+backward, batch 64, K={k} runs: ms per call")
    print("| C | L | alone x K | vmap | vmap of a manual group norm |")
    print("|---|---|---|---|---|")
    for c, length in [(32, 16), (64, 8), (128, 4), (256, 2)]:
        t = norm_row(k, c, length)
        print(f"| {c} | {length} | " + " | ".join(f"{v:.3f}" for v in t) + " |")


def rate(cfg, data, root: Path, k: int, conv: str | None, steps: int = 100) -> float:
    """Captured steps/s: one run alone (conv None) or k runs stacked."""
    trs = [Trainer("ma-cdmp", cfg.replace(seed=i), data, root / f"r{conv}{k}-{i}", "cuda")
           for i in range(k)]  # fmt: skip
    if conv is None:
        (st,) = trs
        st.method.train()
    else:
        st = StackedTrainer(trs, conv=conv)
    st.prepare()
    for _ in range(20):
        st.train_step()
    st.sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        st.train_step()
    st.sync()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--rates-only", action="store_true", help="the captured rates alone")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    cfg = make_config("paper", max_steps=10**9)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    root = Path(tempfile.mkdtemp())
    r1 = rate(cfg, data, root, 1, None)
    print(f"captured steps/s: one run {r1:.1f}")
    for conv in ("cudnn", "matmul"):
        r = rate(cfg, data, root, a.k, conv)
        print(f"captured steps/s: {a.k} stacked, conv={conv}: {r:.1f} ({a.k * r / r1:.2f}x)")
    if a.rates_only:
        return
    for conv in ("cudnn", "matmul"):
        trs = [Trainer("ma-cdmp", cfg.replace(seed=i), data, root / f"{conv}{i}", "cuda",
                       capture=False) for i in range(a.k)]  # fmt: skip
        st = StackedTrainer(trs, conv=conv)
        profile(st.train_step, 3, f"{a.k} runs stacked, eager, conv={conv}", a.rows)
    micro(a.k)


if __name__ == "__main__":
    main()
