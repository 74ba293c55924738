import time, cProfile, pstats, numpy as np, torch
from macdmp.planner import PlannerModels, make_config, PlannerActor
from macdmp.planner.synthetic import SyntheticWindows
from macdmp.planner import export as ex
torch.set_num_threads(1)
cfg = make_config("fast-steer")
data = SyntheticWindows(cfg.horizon, seed=0)
torch.manual_seed(0)
models = PlannerModels(cfg, data.stats, rbs=data.rbs).eval().requires_grad_(False)
actor = PlannerActor(models, seed=0, backend="fused", warm=0.1)
actor.reset(1)
rng = np.random.default_rng(0)
obs = rng.normal(20, 5, (1, 4)).astype(np.float32); mf = rng.normal(20, 5, (1, 4)).astype(np.float32)
for _ in range(3): actor.act(obs, mf)
sess_t = []
orig = ex.FusedPlanner.__call__
def rec(self, **inputs):
    t = time.thread_time_ns(); r = orig(self, **inputs); sess_t.append(time.thread_time_ns() - t); return r
ex.FusedPlanner.__call__ = rec
for rnd in range(3):
    ts = []; sess_t.clear()
    for _ in range(300):
        t = time.thread_time_ns(); actor.act(obs, mf); ts.append(time.thread_time_ns() - t)
    pt = []
    for _ in range(300):
        t = time.process_time_ns(); actor.act(obs, mf); pt.append(time.process_time_ns() - t)
    print(f"act thread {np.median(ts)/1e6:.3f}  act process {np.median(pt)/1e6:.3f}  session {np.median(sess_t)/1e6:.3f} ms")
pr = cProfile.Profile(); pr.enable()
for _ in range(500): actor.act(obs, mf)
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
