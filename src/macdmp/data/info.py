"""What ``macdmp dataset info`` shows: sizes, scenarios, statistics and QoS of a dataset."""

from __future__ import annotations

import os

import numpy as np

from macdmp.data.format import load_scenario_arrays, open_h5, qos_summary, read_header


def dataset_info(path: str) -> dict:
    """Sizes, scenarios, per-dimension statistics and behaviour-policy QoS of a dataset."""
    out: dict = {}
    with open_h5(path) as f:
        header = read_header(f, path)
        out["file"] = str(path)
        out["bytes"] = os.path.getsize(path)
        out["format_version"] = header.format_version
        out["fingerprint"] = header.fingerprint()
        out["command"] = header.attrs["command"]
        out["created"] = header.attrs["created"]
        out["behaviour_policy"] = header.behaviour_policy
        out["scenarios"] = {}
        for name, s in header.scenarios.items():
            keys = ("obs", "actions", "rewards", "totals", "policy")
            arr = load_scenario_arrays(f, header, name, keys)
            obs = arr["obs"][:, 1:].reshape(-1, 4)
            dims = {}
            for j, dim in enumerate(("gen", "gen_max", "tran", "tran_max")):
                dims[dim] = _describe(obs[:, j])
            dims["action_rbs"] = _describe(arr["actions"].reshape(-1))
            dims["reward_ms"] = _describe(arr["rewards"].reshape(-1))
            seeds = np.asarray(f["scenarios"][name]["seeds"][:])
            out["scenarios"][name] = {
                "nodes": s.n_nodes,
                "n_high": s.config.n_high,
                "rf": s.config.rf.name,
                "load": s.config.load,
                "trajectories": s.n_trajectories,
                "frames": s.n_frames,
                "env_seeds": [int(seeds.min()), int(seeds.max())],
                "qos": qos_summary(header, arr["totals"], name),
                "qos_by_policy": _by_policy(header, arr, name),
                "stats": dims,
            }
    return out


def _by_policy(header, arr: dict, name: str) -> dict:
    """QoS of each policy's trajectories (files that mix several policies)."""
    if "policy" not in arr or len(header.policies) < 2:
        return {}
    out = {}
    for p, desc in enumerate(header.policies):
        rows = arr["policy"] == p
        if rows.any():
            qos = qos_summary(header, arr["totals"][rows], name)
            out[desc.get("spec", desc["name"])] = {"trajectories": int(rows.sum()), **qos}
    return out


def _describe(v) -> dict:
    v64 = v.astype("float64")
    return {
        "mean": float(v64.mean()),
        "std": float(v64.std()),
        "min": float(v64.min()),
        "max": float(v64.max()),
    }
