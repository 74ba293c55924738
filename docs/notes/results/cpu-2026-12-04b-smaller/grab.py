"""Save the fused warm graph of fast-steer and a set of its inputs, for ORT option experiments."""
import shutil, sys, pickle
import numpy as np, torch, onnxruntime as ort
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows
from macdmp.planner import export as ex

warm = float(sys.argv[1]); out = sys.argv[2]
torch.set_num_threads(1)
cfg = make_config("fast-steer")
data = SyntheticWindows(cfg.horizon, seed=0)
torch.manual_seed(0)
models = PlannerModels(cfg, data.stats, rbs=data.rbs).eval().requires_grad_(False)
paths = []
Plain = ort.InferenceSession
class Grab(Plain):
    def __init__(self, path, *a, **k):
        shutil.copytree(__import__("os").path.dirname(path), f"{out}-{len(paths)}"); paths.append(path)
        super().__init__(path, *a, **k)
ort.InferenceSession = Grab
calls = []
orig = ex.FusedPlanner.__call__
def rec(self, **inputs):
    calls.append({k: v.copy() for k, v in inputs.items()}); return orig(self, **inputs)
ex.FusedPlanner.__call__ = rec
actor = models.make_actor(seed=0, backend="fused", warm=warm)
actor.reset(1)
rng = np.random.default_rng(0)
for _ in range(6):
    o = rng.uniform(0, 20, (1, cfg.obs_dim)).astype(np.float32)
    actor.act(o, o)
np.savez(f"{out}-inputs.npz", **{k: v for k, v in calls[-1].items()})
print(paths, [ (k, v.shape) for k, v in calls[-1].items()])
