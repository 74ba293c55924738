"""Where the actor's time goes around the OpenVINO graph (fast-steer, one agent, warm=0.1):
python overhead.py -- the median wall time of 2000 decisions and of the parts wrapped."""
import time, numpy as np, torch
from macdmp.planner import PlannerModels, make_config, PlannerActor
from macdmp.planner.synthetic import SyntheticWindows
import importlib; from macdmp.planner import export as ex; pl = importlib.import_module("macdmp.planner.plan")
torch.set_num_threads(1)
cfg = make_config("fast-steer"); data = SyntheticWindows(cfg.horizon, seed=0); torch.manual_seed(0)
models = PlannerModels(cfg, data.stats, rbs=data.rbs).eval().requires_grad_(False)
actor = PlannerActor(models, seed=0, backend="openvino", warm=0.1); actor.reset(1)
rng = np.random.default_rng(0)
obs = rng.normal(20, 5, (1, 4)).astype(np.float32); mf = rng.normal(20, 5, (1, 4)).astype(np.float32)
for _ in range(3): actor.act(obs, mf)
T = {}
def wrap(mod, name):
    f = getattr(mod, name)
    def g(*a, **k):
        t = time.perf_counter_ns(); r = f(*a, **k); T.setdefault(name, []).append(time.perf_counter_ns() - t); return r
    setattr(mod, name, g)
for n in ("check_options", "_past_frames", "dpm_warm_level", "_guidance_weights", "_schedule", "_fused"):
    wrap(pl, n)
orig = ex.FusedPlanner.__call__
def rec(self, **i):
    t = time.perf_counter_ns(); r = orig(self, **i); T.setdefault("graph", []).append(time.perf_counter_ns() - t); return r
ex.FusedPlanner.__call__ = rec
origr = pl._FusedRuns.__call__
def rec2(self, *a):
    t = time.perf_counter_ns(); r = origr(self, *a); T.setdefault("runs_call", []).append(time.perf_counter_ns() - t); return r
pl._FusedRuns.__call__ = rec2
ts = []
for _ in range(2000):
    t = time.perf_counter_ns(); actor.act(obs, mf); ts.append(time.perf_counter_ns() - t)
print("act", np.median(ts) / 1e3, "us")
for k, v in T.items(): print(k, np.median(v) / 1e3, "us")
