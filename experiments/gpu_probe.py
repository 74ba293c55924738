"""Where the time of one MA-CDMP forward goes on a GPU: wall time against GPU time, and the torch
profiler's top operators (docs/notes/planner-speed.md, "GPU").

    PYTHONPATH=src python3 experiments/gpu_probe.py
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows


def timed(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats * 1e3


def main() -> None:
    dev = torch.device("cuda")
    cfg = make_config("paper")
    stats = SyntheticWindows(cfg.horizon, cfg.gamma).stats
    m = PlannerModels(cfg, stats, 40).to(dev).eval()
    for b in (9, 204):
        x = torch.randn(b, cfg.horizon, cfg.channels, device=dev)
        k = torch.zeros(b, dtype=torch.long, device=dev)
        with torch.inference_mode():
            print(f"eps forward, batch {b}: {timed(lambda: m.eps(x, k)):.2f} ms")  # noqa: B023
        xg = x.clone().requires_grad_(True)
        ms = timed(lambda: torch.autograd.grad(m.classifier(xg, k).sum(), xg))  # noqa: B023
        print(f"classifier forward + input gradient, batch {b}: {ms:.2f} ms")
    x = torch.randn(9, cfg.horizon, cfg.channels, device=dev)
    k = torch.zeros(9, dtype=torch.long, device=dev)
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with torch.inference_mode(), profile(activities=acts) as prof:
        for _ in range(5):
            m.eps(x, k)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
