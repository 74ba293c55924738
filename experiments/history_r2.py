"""How much an agent's recent past tells about its future queues (adaptive study, lever 5).

A plan pinned at o_t alone cannot tell whether the agent's queues are filling or draining;
MA-CDMP's option `history` = k pins the k frames before as well. This measures what those
frames could give, before any training: the R^2, on held-out trajectories, of an MLP
(2 x 256) fitted to the change of the agent's backlog (gen + tran queue, packets) from frame t
to t + j, whether its queues fill or drain (not its level, which persists from frame to
frame), from what it knows at frame t:

    own            o_t (4): the agent's queues now, what the plan is pinned at
    own+mf         o_t and the mean field m_t (8): MA-CDMP's pin
    own+mf+hK      the same and o, m of the K frames before t (8 + 8 K): the history lever's pin

    PYTHONPATH=src python experiments/history_r2.py TRAIN.h5 TEST.h5 \\
        [--history 1,3,7] [--ahead 1,4,8,15] [--steps 3000] [--n 200000]

TEST.h5 should hold other trajectories of the same scenarios (another collection seed). One
model per information set predicts every horizon of --ahead at once (the targets standardised);
the windows are the training windows of `macdmp.data.windows` (K + 1 + max ahead frames).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from macdmp.data.windows import open_windows


def _ints(text: str, name: str, low: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{name}: a comma list of integers >= {low} (got {text!r})") from None
    if not values or min(values) < low:
        raise ValueError(f"{name}: a comma list of integers >= {low} (got {text!r})")
    return sorted(set(values))


def features(x: np.ndarray, xbar: np.ndarray, now: int, history: int, mf: bool) -> np.ndarray:
    """The inputs of one information set from windows x, xbar (B, frames, 4), frame `now` = t."""
    parts = [x[:, now]]
    if mf:
        parts.append(xbar[:, now])
    for lag in range(1, history + 1):
        parts += [x[:, now - lag], xbar[:, now - lag]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def backlog_change(x: np.ndarray, now: int, ahead: list[int]) -> np.ndarray:
    """The targets: the change of the backlog (gen + tran queue) from frame ``now`` to ``now``
    + j for each j of ``ahead``, from windows x (B, frames, 4); (B, len(ahead))."""
    q = x[:, :, 0] + x[:, :, 2]
    return np.stack([q[:, now + j] - q[:, now] for j in ahead], axis=1).astype(np.float32)


def fit_r2(
    f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, y_te: np.ndarray, steps: int
) -> np.ndarray:
    """R^2 per target column of an MLP fitted on (f_tr, y_tr), measured on (f_te, y_te)."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    ym, ys = y_tr.mean(0), y_tr.std(0) + 1e-6
    xt, xe = torch.tensor((f_tr - mu) / sd), torch.tensor((f_te - mu) / sd)
    yt = torch.tensor((y_tr - ym) / ys)
    net = nn.Sequential(
        nn.Linear(xt.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, yt.shape[1]),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        i = torch.randint(0, len(xt), (1024,))
        loss = (net(xt[i]) - yt[i]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(xe).numpy() * ys + ym
    return 1.0 - ((pred - y_te) ** 2).mean(0) / np.maximum(y_te.var(0), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--history", default="1,3,7", help="K of the own+mf+hK sets (default 1,3,7)")
    p.add_argument("--ahead", default="1,4,8,15", help="frames ahead j (default 1,4,8,15)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--n", type=int, default=200_000, help="training windows (default 200,000)")
    args = p.parse_args(argv)
    try:  # bad options and missing or damaged files: named, before any work
        history = _ints(args.history, "--history", 1)
        ahead = _ints(args.ahead, "--ahead", 1)
        if args.steps < 1 or args.n < 1:
            raise ValueError(f"--steps, --n: must be >= 1 (got {args.steps}, {args.n})")
        now = max(history)
        frames = now + 1 + max(ahead)
        tr_ds, te_ds = (open_windows(path, frames, 0.99) for path in (args.train, args.test))
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tr = tr_ds.sample(args.n, rng)
    te = te_ds.sample(max(1, args.n // 4), rng)

    y_tr, y_te = (backlog_change(b["x"], now, ahead) for b in (tr, te))
    level = float(te["x"][:, now, [0, 2]].sum(1).mean())
    print(f"{args.train} -> {args.test}: backlog at t {level:.1f} packets on average; "
          f"{len(y_tr):,} training windows, {len(y_te):,} held out")  # fmt: skip
    print("| information | inputs | " + " | ".join(f"R^2, t+{j}" for j in ahead) + " |")
    print("| --- | --- |" + " --- |" * len(ahead))
    sets = [("own", 0, False), ("own+mf", 0, True)] + [(f"own+mf+h{k}", k, True) for k in history]
    for name, k, mf in sets:
        f_tr = features(tr["x"], tr["xbar"], now, k, mf)
        f_te = features(te["x"], te["xbar"], now, k, mf)
        r2 = fit_r2(f_tr, y_tr, f_te, y_te, args.steps)
        cells = " | ".join(f"{v:.3f}" for v in r2)
        print(f"| {name} | {f_tr.shape[1]} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
