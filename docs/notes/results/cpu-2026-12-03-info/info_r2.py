"""How much of maxweight's demand an agent could predict from what it knows (adaptive study,
section 5): R^2 of an MLP fitted to the demand of a maxweight-only dataset from each
information set, measured on trajectories of another collection seed.

    python info_r2.py TRAIN.h5 TEST.h5 [--steps 4000] [--sets own,own+mf,...]

Information sets for the demand a_t, at frame t (windows of 2 frames: o_{t-1}, o_t):
  own            o_t (4): what BC sees
  own+mf         o_t and the neighbours' mean observation (8): what MA-CDMP's planner sees
  own+mf+prev    the same and o_{t-1} (12): the last frame's queues (their trend)
  own+mf+act     the same as own+mf and the agent's last demand a_{t-1} (9)
and for the inverse dynamics, which reads a_t off a transition (o_t, o_t+1) (the window's two
frames, the demand of its first):
  inv            o_t, o_t+1 (8): MA-CDMP's inverse dynamics
  inv+mf         o_t, o_t+1 and the mean field at t and t+1 (16): with the planned mean field
  inv+mf_now     o_t, o_t+1 and the mean field at t (12): with the measured mean field only
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from macdmp.data.windows import open_windows

SETS = ("own", "own+mf", "own+mf+prev", "own+mf+act", "inv", "inv+mf", "inv+mf_now")


def features(batch: dict, which: str) -> np.ndarray:
    x, xbar, act = batch["x"], batch["xbar"], batch["act"]
    if which.startswith("inv"):
        parts = [x[:, 0], x[:, 1]]
        if which != "inv":
            parts.append(xbar[:, 0])
        if which == "inv+mf":
            parts.append(xbar[:, 1])
        return np.concatenate(parts, axis=1).astype(np.float32)
    parts = [x[:, 1]]
    if "mf" in which:
        parts.append(xbar[:, 1])
    if "prev" in which:
        parts.append(x[:, 0])
    if which.endswith("+act"):
        parts.append(act[:, :1])
    return np.concatenate(parts, axis=1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--sets", default=",".join(SETS))
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tr = open_windows(args.train, horizon=2, gamma=0.99).sample(args.n, rng)
    te = open_windows(args.test, horizon=2, gamma=0.99).sample(100_000, rng)
    print("| information | inputs | R^2 (held-out trajectories) |")
    print("| --- | --- | --- |")
    for which in args.sets.split(","):
        col = 0 if which.startswith("inv") else 1  # the demand of the transition's first frame
        y_tr, y_te = (b["act"][:, col].astype(np.float32) for b in (tr, te))
        f_tr, f_te = features(tr, which), features(te, which)
        mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
        xt, xe = torch.tensor((f_tr - mu) / sd), torch.tensor((f_te - mu) / sd)
        ym, ys = y_tr.mean(), y_tr.std()
        yt = torch.tensor((y_tr - ym) / ys)
        net = nn.Sequential(
            nn.Linear(xt.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 1),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(args.steps):
            i = torch.randint(0, len(xt), (1024,))
            loss = (net(xt[i]).squeeze(-1) - yt[i]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = net(xe).squeeze(-1).numpy() * ys + ym
        r2 = 1.0 - np.mean((pred - y_te) ** 2) / np.var(y_te)
        print(f"| {which} | {xt.shape[1]} | {r2:.3f} |", flush=True)


if __name__ == "__main__":
    main()
