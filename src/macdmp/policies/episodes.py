"""Run policies for whole episodes on the batched core and turn the counts into QoS metrics."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from macdmp.common.progress import progress_bar
from macdmp.common.signals import check_stop
from macdmp.policies import Policy, make_policy
from macdmp.sim.config import ScenarioConfig
from macdmp.sim.core import DELAY_SUM, DELIV, DROP_COLUMNS, GEN, BatchedNetworks

METRICS = ("avg_reward", "throughput_mbps", "mean_delay_ms", "loss_rate")

# The loss-aware delay (docs/guide/evaluating.md, "The loss-aware delay"): the mean delay over the
# packets generated, each lost packet (dropped at a full buffer or after its last retry)
# counted at LOSS_PENALTY_MS, the delivered ones at their delay:
#     loss_aware_delay_ms = (1 - loss_rate) x mean_delay_ms + loss_rate x LOSS_PENALTY_MS
# (the packets still queued at the episode's end, in 1 - loss_rate, count at the delivered
# mean). 1 s is the floor of TCP's retransmission timeout (RFC 6298, 2.4): what a lost packet
# of a reliable flow costs at the least. It is above every mean delivered delay measured here,
# so losing a packet never scores better than delivering it late. Lower is better.
LOSS_PENALTY_MS = 1000.0
LOSS_AWARE = "loss_aware_delay_ms"
TABLE_METRICS = (*METRICS, LOSS_AWARE)  # METRICS keeps its four keys for older readers


def loss_aware_delay(mean_delay_ms, loss_rate, penalty_ms: float = LOSS_PENALTY_MS):
    """``(1 - loss_rate) * mean_delay_ms + loss_rate * penalty_ms``, elementwise; where nothing
    was delivered (the delay is NaN) every packet counts at the penalty."""
    d = np.asarray(mean_delay_ms, dtype=float)
    rate = np.asarray(loss_rate, dtype=float)
    out = np.where(np.isnan(d), penalty_ms, (1.0 - rate) * np.nan_to_num(d) + rate * penalty_ms)
    return out if out.ndim else float(out)


def with_loss_aware(row: dict) -> dict:
    """``row`` (a summary or an evaluation row) with the loss-aware delay added where it lacks
    it (result files written before the metric): from the per-seed delay and loss rate where
    the row has them (``_seeds``: each the mean over the scenarios), else from its means (the
    standard deviation then from theirs, as if independent). A row that has the key is
    returned as it is."""
    if LOSS_AWARE in row or "mean_delay_ms" not in row or "loss_rate" not in row:
        return row
    out = dict(row)
    d, rate = row.get("mean_delay_ms_seeds"), row.get("loss_rate_seeds")
    if d is not None and rate is not None and len(d) == len(rate) and len(d) > 0:
        v = loss_aware_delay(np.array(d, dtype=float), np.array(rate, dtype=float))
        out[LOSS_AWARE], out[LOSS_AWARE + "_std"] = float(np.mean(v)), float(np.std(v))
        out[LOSS_AWARE + "_seeds"] = [float(x) for x in v]
    else:  # the spread from the two metrics' spreads, as if independent
        d, rate = float(row["mean_delay_ms"]), float(row["loss_rate"])
        out[LOSS_AWARE] = loss_aware_delay(d, rate)
        sd, sr = row.get("mean_delay_ms_std"), row.get("loss_rate_std")
        out[LOSS_AWARE + "_std"] = (
            float(np.hypot((1.0 - rate) * sd, (LOSS_PENALTY_MS - d) * sr))
            if sd is not None and sr is not None and np.isfinite(d)
            else float("nan")
        )
    return out


@dataclass
class EpisodeResult:
    """Per-network QoS of one batch of episodes, plus per-frame traces."""

    scenario: str
    rf: str
    policy: str
    seeds: list[int]
    frames: int
    n_nodes: int
    throughput_mbps: np.ndarray  # (B,)
    mean_delay_ms: np.ndarray
    loss_rate: np.ndarray
    avg_reward: np.ndarray
    generated: np.ndarray
    delivered: np.ndarray
    dropped: np.ndarray
    queued: np.ndarray
    frame_delay_ms: np.ndarray  # (B, F) mean delay of the packets delivered in each frame
    act_seconds: float = 0.0  # wall time spent inside policy.act
    sim_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def loss_aware_delay_ms(self) -> np.ndarray:
        """(B,) the loss-aware delay of each network (``loss_aware_delay``, LOSS_PENALTY_MS)."""
        return loss_aware_delay(self.mean_delay_ms, self.loss_rate)

    def summary(self) -> dict:
        """Mean and standard deviation over the networks of every metric (``TABLE_METRICS``:
        the loss-aware delay among them), plus the totals."""
        out: dict = {
            "scenario": self.scenario,
            "rf": self.rf,
            "policy": self.policy,
            "episodes": len(self.seeds),
            "frames": self.frames,
        }
        for key in TABLE_METRICS:
            v = getattr(self, key)
            out[key] = float(np.mean(v))
            out[key + "_std"] = float(np.std(v))
        for key in ("generated", "delivered", "dropped", "queued"):
            out[key] = int(np.sum(getattr(self, key)))
        out["act_ms_per_frame"] = 1000.0 * self.act_seconds / max(self.frames, 1)
        return out


def run_episodes(
    cfg: ScenarioConfig,
    policy: Policy | str,
    seeds: Sequence[int],
    frames: int | None = None,
    progress: bool = False,
) -> EpisodeResult:
    """Run one episode per seed, all networks batched, and measure QoS (spec section 3)."""
    return run_groups([(cfg, list(seeds))], policy, frames, progress)[0]


def run_groups(
    groups: Sequence[tuple[ScenarioConfig, Sequence[int]]],
    policy: Policy | str,
    frames: int | None = None,
    progress: bool = False,
) -> list[EpisodeResult]:
    """Run several batches of networks (e.g. scenarios with different N) in lockstep.

    A decentralised policy (`policy.decentralized`, e.g. the MA-CDMP planner) is called once per
    frame for the agents of every group together, each agent seeing only its own observation
    and its neighbours' mean; any other policy is called per group with its own copy.
    """
    if not groups:
        raise ValueError("groups: give at least one (scenario, seeds) pair")
    frames = groups[0][0].episode_frames if frames is None else int(frames)
    if frames < 1:
        raise ValueError(f"frames: must be >= 1, got {frames}")
    base = make_policy(policy) if isinstance(policy, str) else policy
    sims = [BatchedNetworks(cfg, seeds) for cfg, seeds in groups]
    shared = getattr(base, "decentralized", False)
    policies = [base if shared else copy.copy(base) for _ in sims]
    for pol, sim in zip(policies, sims, strict=True):
        pol.reset(sim)
    obs = [sim.obs for sim in sims]
    reward_sum = [np.zeros(sim.batch_size) for sim in sims]
    frame_delay = [np.full((sim.batch_size, frames), np.nan) for sim in sims]
    act_s = sim_s = 0.0
    bar = None
    if progress:
        label = str(getattr(base, "label", base.name))
        bar = progress_bar(frames, label if len(label) <= 24 else label[:23] + "…", leave=False)
    for t in range(frames):
        check_stop()  # a safe point: SIGINT/SIGTERM stop here (macdmp.common.signals)
        t0 = time.perf_counter()
        mfs = [sim.mean_field(o) for sim, o in zip(sims, obs, strict=True)]
        if shared:
            flat_obs = np.concatenate([o.reshape(-1, 4) for o in obs])
            flat_mf = np.concatenate([m.reshape(-1, 4) for m in mfs])
            flat = base.act_agents(flat_obs, flat_mf)
            sizes = np.cumsum([o.shape[0] * o.shape[1] for o in obs])[:-1]
            demands = [
                d.reshape(o.shape[:2]) for d, o in zip(np.split(flat, sizes), obs, strict=True)
            ]
        else:
            demands = [p.act(o, m) for p, o, m in zip(policies, obs, mfs, strict=True)]
        t1 = time.perf_counter()
        act_s += t1 - t0
        for g, sim in enumerate(sims):
            res = sim.step(demands[g])
            obs[g] = res.obs
            reward_sum[g] += res.reward.mean(axis=1)
            delivered = res.stats[:, DELIV]
            frame_delay[g][:, t] = np.where(
                delivered > 0, res.stats[:, DELAY_SUM] / np.maximum(delivered, 1), np.nan
            )
        sim_s += time.perf_counter() - t1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = []
    for g, ((cfg, _), sim) in enumerate(zip(groups, sims, strict=True)):
        tot = sim.totals
        gen, deliv = tot[:, GEN], tot[:, DELIV]
        dropped = tot[:, list(DROP_COLUMNS)].sum(axis=1)  # buffer, retry limit, no route
        duration_s = frames * cfg.frame_ms / 1000.0
        results.append(
            EpisodeResult(
                scenario=cfg.name,
                rf=cfg.rf.name,
                policy=getattr(base, "label", base.name),
                seeds=list(sim.seeds),
                frames=frames,
                n_nodes=cfg.n_nodes,
                throughput_mbps=deliv * cfg.packet_bits / duration_s / 1e6,
                mean_delay_ms=np.where(deliv > 0, tot[:, DELAY_SUM] / np.maximum(deliv, 1), np.nan),
                loss_rate=np.where(gen > 0, dropped / np.maximum(gen, 1), 0.0),
                avg_reward=reward_sum[g] / frames,
                generated=gen.astype(np.int64),
                delivered=deliv.astype(np.int64),
                dropped=dropped.astype(np.int64),
                queued=sim.queued(),
                frame_delay_ms=frame_delay[g],
                act_seconds=act_s,  # shared by the groups stepped together
                sim_seconds=sim_s,
            )
        )
    return results


def format_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of summaries: mean +- std for the QoS metrics."""
    columns = list(columns or ["scenario", "rf", "policy", *TABLE_METRICS])
    cells = [[_cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(row: dict, col: str) -> str:
    v = row.get(col, "")
    if col in TABLE_METRICS:
        digits = 4 if col == "loss_rate" else 2
        std = row.get(col + "_std")
        if not isinstance(v, float | int) or not np.isfinite(v):
            return "n/a"
        if std is not None and not np.isfinite(std):
            std = None
        return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
