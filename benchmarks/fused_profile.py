"""Where one agent's fused plan spends its ONNX Runtime nodes: the operator census of the whole
planning call as one graph (backend "fused"), one agent, one thread.

    python benchmarks/fused_profile.py [--preset fast-steer] [--warm 0.15] [--frames 300]

Untrained models of the preset (the graph does not depend on the weights), warm-started plans
as the preset's actor makes them, ``--frames`` decisions with ONNX Runtime's profiler on. Prints
a table: per operator type, nodes run per decision and their share of the kernel time. The
profiler's own cost inflates every node's time (a decision takes several times longer under
it), so the shares are indicative and the node counts exact; the latency itself is measured by
``benchmarks/plan_latency.py``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from macdmp.planner import PlannerModels, make_config
from macdmp.planner.synthetic import SyntheticWindows


def profiled_sessions(prefix: str) -> type:
    """ort.SessionOptions with the profiler on, writing under ``prefix``."""

    class Options(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.enable_profiling = True
            self.profile_file_prefix = prefix

    return Options


def census(events: list[dict]) -> tuple[int, dict[str, tuple[float, float]]]:
    """(decisions, operator -> (nodes per decision, share of the kernel time))."""
    runs = sum(1 for e in events if e.get("name") == "model_run")
    time: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            time[op] += e["dur"]
            count[op] += 1
    total = sum(time.values()) or 1
    return runs, {op: (count[op] / runs, time[op] / total) for op, _ in time.most_common()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="fast-steer")
    ap.add_argument("--warm", type=float, default=0.15)
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = make_config(args.preset)
    data = SyntheticWindows(cfg.horizon, seed=0)
    torch.manual_seed(0)
    models = PlannerModels(cfg, data.stats, rbs=data.rbs).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        plain = ort.SessionOptions
        ort.SessionOptions = profiled_sessions(str(Path(tmp) / "plan"))  # type: ignore[misc]
        try:
            actor = models.make_actor(seed=0, backend="fused", warm=args.warm)
            actor.reset(1)
            for _ in range(args.frames + 1):  # the first frame is cold, in another graph
                o = rng.uniform(0, 20, (1, cfg.obs_dim)).astype(np.float32)
                actor.act(o, o)
            # the sessions write their profiles when told to end them (walking every object
            # touches torch's deprecated aliases, which warn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                sessions = [s for s in gc.get_objects() if isinstance(s, ort.InferenceSession)]
            files = [s.end_profiling() for s in sessions]
        finally:
            ort.SessionOptions = plain  # type: ignore[misc]
        # the warm graph's profile: the one of the most decisions (the cold one ran once)
        profiles = [json.loads(Path(f).read_text()) for f in files if f]
        events = max(profiles, key=lambda ev: sum(e.get("name") == "model_run" for e in ev))
    runs, ops = census(events)
    nodes = sum(n for n, _ in ops.values())
    print(f"# The fused plan's operators: `{args.preset}`, warm {args.warm}, one agent\n")
    print(
        f"Machine: {platform.processor() or platform.machine()}; torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; {runs} warm decisions, "
        f"{nodes:.0f} nodes per decision.\n"
    )
    print("| operator | nodes per decision | share of kernel time |")
    print("| --- | --- | --- |")
    for op, (n, share) in ops.items():
        print(f"| {op} | {n:.1f} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
