import numpy as np, h5py
from macdmp.data.windows import open_windows
import sys; P=sys.argv[1]  # DATASET.h5 [REWARD] (default the paper's delay reward)
ds = open_windows(P, horizon=16, gamma=0.99, reward=sys.argv[2] if len(sys.argv) > 2 else "delay")
with h5py.File(P) as f:
    pols = f.attrs["policies"]
    import json
    pols = json.loads(pols) if isinstance(pols, str) else pols
    print([p.get("name", p) if isinstance(p, dict) else p for p in pols])
    pol_by_group = {}
    for g in ds._groups:
        pol_by_group[g.name] = f["scenarios"][g.name]["policy"][()]
agent_ret, traj_ret, pol_a, pol_t, grp_t = [], [], [], [], []
for g in ds._groups:
    R = g.rtg[:, 0, :]  # (T, N) whole return per agent
    p = pol_by_group[g.name]
    agent_ret.append(R.ravel()); pol_a.append(np.repeat(p, R.shape[1]))
    traj_ret.append(R.mean(1)); pol_t.append(p); grp_t += [g.name]*len(p)
A=np.concatenate(agent_ret); PA=np.concatenate(pol_a); T=np.concatenate(traj_ret); PT=np.concatenate(pol_t)
def share(mask, P): 
    u,c=np.unique(P[mask],return_counts=True); return dict(zip(u.tolist(),(c/c.sum()).round(2).tolist()))
print("all trajectories by policy:", share(np.ones_like(PT,bool),PT))
print("top 10% (trajectory, agent) returns:", share(A>=np.quantile(A,0.9),PA))
print("top 10% trajectory mean returns (pooled over scenarios):", share(T>=np.quantile(T,0.9),PT))
# per scenario top 10% trajectories
G=np.array(grp_t); m=np.zeros_like(PT,bool)
for g in np.unique(G):
    s=G==g; m[s]=T[s]>=np.quantile(T[s],0.9)
print("top 10% trajectories within each scenario:", share(m,PT))
for p in np.unique(PT): print("policy",p,"mean traj return %.1f"%T[PT==p].mean())
