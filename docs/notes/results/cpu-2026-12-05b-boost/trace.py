import numpy as np
from macdmp.methods.policy import load_policy
from macdmp.policies import Policy
from macdmp.policies.allocators import backlog
from macdmp.policies.episodes import run_episodes
from macdmp.sim.config import load_scenario

class Rec(Policy):
    def __init__(self, base, log):
        self.base, self.log, self.name = base, log, "rec"
    def reset(self, sim):
        super().reset(sim); self.base.reset(sim)
    def act(self, obs, mf):
        d = np.asarray(self.base.act(obs, mf), dtype=float)
        q = backlog(obs)
        self.log.append((d.copy(), q.copy(), np.asarray(obs).copy()))
        return d

cfg = load_scenario("n8-2to6-mobile", rf="ideal")
for seed in (2147483648, 2147483649, 2147483650):
    log = []
    pol = load_policy("pbc-mobile/seed-0,checkpoint=best")
    r = run_episodes(cfg, Rec(pol, log), [seed], frames=1000, progress=False)
    d = np.array([x[0][0] for x in log]); q = np.array([x[1][0] for x in log])
    print(seed, "delay", r.summary()["loss_aware_delay_ms"], "shape", d.shape)
    for t in (50, 200, 400, 600, 800, 999):
        print(t, "sum d", d[t].sum().round(1), "sum q", q[t].sum(), "d", d[t].round(1), "q", q[t])
