"""The paper's evaluation protocol: any mix of allocators and trained runs on identical networks.

For every policy, every (scenario, RF) pair runs the same held-out network seeds for the same
number of frames, all stepped in lockstep. A row of the table is one (policy, RF): the metrics
are averaged over the scenarios for each seed, then the mean and standard deviation are taken
over the seeds (the paper's "3 independent scenario seeds").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from macdmp.common.outputs import atomic_write_text
from macdmp.methods.policy import load_policy
from macdmp.policies.episodes import TABLE_METRICS, EpisodeResult, run_groups
from macdmp.sim.config import load_scenario
from macdmp.sim.seeds import check_disjoint, eval_seeds


def evaluate(
    policies: Sequence[str],
    scenarios: Sequence[str],
    rfs: Sequence[str] = ("ideal", "limited"),
    n_seeds: int = 3,
    frames: int = 1000,
    seed_offset: int = 0,
    progress: bool = True,
) -> dict:
    """Run every policy on every (scenario, RF) with the same evaluation seeds.

    Every policy is built and tried for one frame before any evaluation starts, so a bad spec
    (an unknown option, ``steps=0``, a run trained for other scenarios) fails at once.
    """
    if int(frames) < 1:
        raise ValueError(f"frames: must be >= 1 (got {frames})")
    if not policies:
        raise ValueError("policies: give at least one policy")
    if not scenarios or not rfs:
        raise ValueError("scenarios, rfs: give at least one of each")
    seeds = eval_seeds(n_seeds, seed_offset)
    configs = [load_scenario(s, rf=rf) for rf in rfs for s in scenarios]
    built = [check_policy(spec, configs, seeds, seed_offset) for spec in policies]
    rows, per_scenario, traces, by_case = [], [], {}, {}
    for policy in built:
        results = run_groups([(cfg, seeds) for cfg in configs], policy, frames, progress)
        label = getattr(policy, "label", policy.name)
        for rf in rfs:
            mine = [r for r in results if r.rf == rf]
            rows.append(_aggregate(label, rf, mine, results))
        per_scenario += [dict(r.summary(), policy=label) for r in results]
        traces[label] = results[0].frame_delay_ms[0]
        for r in results:
            by_case.setdefault(f"{r.scenario}/{r.rf}", {})[label] = [
                [None if np.isnan(v) else round(float(v), 3) for v in seed]
                for seed in r.frame_delay_ms
            ]
    return {
        "rows": rows,
        "per_scenario": per_scenario,
        "seeds": seeds,
        "frames": frames,
        "scenarios": list(scenarios),
        "rfs": list(rfs),
        "delay_traces": {k: v.tolist() for k, v in traces.items()},
        # "SCENARIO/RF" -> policy -> one list per seed of each frame's mean delay (ms; None
        # when nothing was delivered in that frame)
        "frame_delay_ms": by_case,
    }


def check_policy(spec: str, configs: Sequence, seeds: Sequence[int], seed_offset: int = 0):
    """Build one policy and run it for one frame on one network of every configuration.

    Policies are reset before every episode, so this trial leaves no trace in the results.
    """
    try:
        policy = load_policy(spec, seed=seed_offset)
        train_seeds = getattr(policy, "train_seeds", None)
        if train_seeds is not None:
            check_disjoint(seeds, train_seeds)
        run_groups([(cfg, list(seeds[:1])) for cfg in configs], policy, frames=1)
    except (ValueError, FileNotFoundError) as exc:
        text = str(exc).removeprefix("policy: ")
        raise type(exc)(f"--policy {spec}: {text}") from None
    return policy


def _aggregate(
    label: str, rf: str, mine: list[EpisodeResult], everything: list[EpisodeResult]
) -> dict:
    row: dict = {"policy": label, "rf": rf, "episodes": sum(len(r.seeds) for r in mine)}
    for key in TABLE_METRICS:  # the loss-aware delay with the four
        per_seed = np.nanmean(np.stack([getattr(r, key) for r in mine]), axis=0)
        row[key] = float(np.mean(per_seed))
        row[key + "_std"] = float(np.std(per_seed))
        row[key + "_seeds"] = [float(v) for v in per_seed]  # one value per held-out seed
    for key in ("generated", "delivered", "dropped", "queued"):
        row[key] = int(sum(int(np.sum(getattr(r, key))) for r in mine))
    agents = sum(len(r.seeds) * r.n_nodes for r in everything)
    row["act_ms_per_frame"] = 1000.0 * everything[0].act_seconds / everything[0].frames
    row["agents_per_call"] = agents
    return row


TRACE_KEYS = ("delay_traces", "frame_delay_ms")  # a result's per-frame delays, for the plots


def write_result_json(path: str | Path, result: dict, traces: bool = True) -> None:
    """An :func:`evaluate` result as JSON, written atomically; the per-frame traces (lists of
    plain numbers) one per line, not one number per line. ``traces=False`` leaves them out
    (``TRACE_KEYS``: most of the file; the tables and ``macdmp report`` need none of it,
    only ``delay.png`` does)."""
    if not traces:
        result = {k: v for k, v in result.items() if k not in TRACE_KEYS}
    text = json.dumps(result, indent=1, default=float)
    text = re.sub(
        r"\[\s+([-+0-9.eE,\snulNaIfity]+?)\s+\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    atomic_write_text(path, text)
