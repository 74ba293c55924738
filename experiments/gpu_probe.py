import time, torch, numpy as np
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows
dev = torch.device("cuda")
cfg = make_config("paper")
m = PlannerModels(cfg, SyntheticWindows(cfg.horizon, cfg.gamma).stats, 40).to(dev).eval()
print("cudnn", torch.backends.cudnn.enabled, torch.backends.cudnn.benchmark, "tf32", torch.backends.cuda.matmul.allow_tf32)
for b in (9, 204):
    x = torch.randn(b, cfg.horizon, cfg.channels, device=dev); k = torch.zeros(b, dtype=torch.long, device=dev)
    with torch.inference_mode():
        for _ in range(5): m.eps(x, k)
        torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(50): m.eps(x, k)
        torch.cuda.synchronize(); print("eps fwd", b, (time.perf_counter()-t)/50*1e3, "ms")
    xg = x.clone().requires_grad_(True)
    for _ in range(3): torch.autograd.grad(m.classifier(xg, k).sum(), xg)
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(50): torch.autograd.grad(m.classifier(xg, k).sum(), xg)
    torch.cuda.synchronize(); print("cls fwd+bwd", b, (time.perf_counter()-t)/50*1e3, "ms")
from torch.profiler import profile, ProfilerActivity
x = torch.randn(9, cfg.horizon, cfg.channels, device=dev); k = torch.zeros(9, dtype=torch.long, device=dev)
with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(5): m.eps(x, k)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
