"""Which behaviour of a family's dataset holds the full buffers, and what it asks there.

    python full_buffers.py mobile.h5 n8-2to6-mobile
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np

path, scenario = sys.argv[1], sys.argv[2]
with h5py.File(path, "r") as f:
    names = [p["spec"] for p in json.loads(f.attrs["policies"])]
    g = f["scenarios"][scenario]
    obs, actions, policy = g["obs"][:, :-1], g["actions"][:], g["policy"][:]
    degree = g["adjacency_t"][:, :-1].sum(-1)
q = obs[..., 0].astype(float) + obs[..., 2]  # generation plus transmission queue
print("| behaviour | share of node-frames with >= 500 packets | mean demand there (RBs) |")
print("| --- | --- | --- |")
for p, name in enumerate(names):
    mine = (policy == p)[:, None, None]
    full = mine & (q >= 500)
    demand = f"{actions[full].mean():.2f}" if full.any() else "-"
    print(f"| {name} | {full.sum() / (mine.sum() * q.shape[1] * q.shape[2]):.4f} | {demand} |")
print(f"full buffers at an isolated node: {(degree[q >= 500] == 0).mean():.4f}")
