import time, sys, numpy as np, torch
from macdmp.planner import PlannerModels, make_config, PlannerActor
from macdmp.planner.synthetic import SyntheticWindows
torch.set_num_threads(1)
import json
variants = json.loads(sys.argv[1])
interleave = "--interleave" in sys.argv  # one decision of each model in turn, not 400 of one
actors = {}
rng = np.random.default_rng(0)
obs = rng.normal(20, 5, (1, 4)).astype(np.float32); mf = rng.normal(20, 5, (1, 4)).astype(np.float32)
for name, ov in variants.items():
    cfg = make_config("fast-steer", **ov)
    data = SyntheticWindows(cfg.horizon, seed=0)
    torch.manual_seed(0)
    models = PlannerModels(cfg, data.stats, rbs=data.rbs).eval().requires_grad_(False)
    a = PlannerActor(models, seed=0, backend="fused", warm=0.1); a.reset(1)
    for _ in range(3): a.act(obs, mf)
    actors[name] = a
    print(name, sum(p.numel() for p in models.eps.parameters()), flush=True)
ts = {k: [] for k in actors}
keys = list(actors)
if interleave:
    for it in range(2000):
        for k in (keys if it % 2 else keys[::-1]):
            t = time.thread_time_ns(); actors[k].act(obs, mf); ts[k].append(time.thread_time_ns() - t)
else:
    for rnd in range(5):
        for k in keys:
            for it in range(400):
                t = time.thread_time_ns(); actors[k].act(obs, mf); ts[k].append(time.thread_time_ns() - t)
for k, v in ts.items():
    v = np.array(v[100:]) / 1e6  # the first 100 of each dropped
    print(f"{k:20s} median {np.median(v):.3f}  p25 {np.percentile(v,25):.3f}  min {v.min():.3f} ms")
