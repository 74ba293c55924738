"""Early checkpoints of a reproduction training run, evaluated as the report evaluates the run.

Every MA-CDMP and MA-DD in-loop learning curve of the paper-scale reproduction peaks within its
first 15,000 steps and ends lower (docs/notes/results/gpu-2026-11-30h/curves.txt). The in-loop
protocol is short (2 held-out seeds x 200 frames, ideal RF); this asks whether the early model
also plans better by Fig. 4's protocol (4 scenarios x 3 held-out seeds x 1,000 frames).

  python experiments/early_checkpoints.py KEY --steps 5000,10000 [--rf ideal,limited]
      [--swap PART] [--scale paper] [--work DIR] [--out DIR] [--device D] [--no-compile]

On the GPU machine, `experiments/reproduce_gpu.sh` runs it as the block ``early-RUN`` (beside
the work list's chains, sharing their dataset). Collects the scale's dataset into WORK as the
work list's data unit does (and refuses to go on if its fingerprint differs from the committed
one), trains the run of the work list's training unit KEY with that unit's settings (refused if
they differ from the committed result's), and keeps a copy of the run folder at each of --steps.
It is the same run stopped early, not a shorter one: the learning-rate schedule is the full
run's. Training stops after the last of --steps. Then each copy is evaluated as Fig. 4's unit of
KEY under that RF evaluates the finished run (``eval-<run>-paper-<rf>`` at the paper scale), and
OUT/<run>-step<S>-<rf>.json is written as soon as it is done (the fields of an evaluation result
file, with the step); OUT/<run>-train.json keeps the in-loop evaluations. With --swap PART (a
part of the method's model: ``invdyn``, MA-CDMP's and MA-DD's inverse dynamics), each pair of
kept steps A != B also makes and evaluates a hybrid: the model of step A with PART's weights
from step B (OUT/<run>-stepA-PARTB-<rf>.json), to tell which part makes one step plan better
than another.
Compare them with the committed evaluations by the report's rule:

  PYTHONPATH=src python experiments/paper_results.py standing OUT/<run>-step<S>-<rf>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from macdmp.methods.base import get_method
from macdmp.methods.checkpoint import (
    CHECKPOINT_NAME,
    pick_device,
    read_checkpoint,
    write_checkpoint,
)
from macdmp.methods.trainer import open_trainers, read_evals
from macdmp.reproduce.plan import build_plan
from macdmp.reproduce.units import data_path, run_data, run_eval

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("key", help="a training unit that Fig. 4 evaluates, e.g. train-ma-cdmp-s0")
    ap.add_argument("--steps", required=True, help="comma list of steps to keep, increasing")
    ap.add_argument("--rf", default="ideal,limited", help="comma list: ideal, limited")
    ap.add_argument("--swap", metavar="PART", help="also evaluate steps with PART of another")
    ap.add_argument("--scale", default="paper", help="smoke, demo or paper (default paper)")
    ap.add_argument("--work", default="/tmp/early-work", help="dataset and run folders")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/early-out"))
    ap.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    ap.add_argument("--no-compile", action="store_true", help="do not torch.compile (on CUDA)")
    a = ap.parse_args()

    try:
        plan = build_plan(a.scale)
    except ValueError as exc:
        sys.exit(str(exc))
    if a.key not in plan.units or plan.units[a.key].kind != "train":
        trains = sorted(k for k, u in plan.units.items() if u.kind == "train")
        sys.exit(f"KEY: {a.key!r} is not a training unit at scale {a.scale}; have: {trains}")
    try:
        steps = [int(s) for s in a.steps.split(",") if s]
    except ValueError:
        sys.exit(f"--steps: a comma list of integers (got {a.steps!r})")
    unit = plan.units[a.key]
    method = unit.params["method"]
    cfg = get_method(method).config_class.from_dict(unit.params["config"])
    if not steps or steps != sorted(set(steps)) or steps[0] < 1 or steps[-1] > cfg.total_steps:
        sys.exit(f"--steps: increasing, from 1 to the run's {cfg.total_steps} (got {a.steps!r})")
    rfs = [r for r in a.rf.split(",") if r]
    run = a.key.removeprefix("train-")
    fig4 = [plan.units[k] for s in plan.figure("fig4").series for k in s.keys]
    fig4 = {u.params["rf"]: u for u in fig4 if u.params["policy"].get("run") == a.key}
    if not fig4:
        sys.exit(f"KEY: Fig. 4 does not evaluate {a.key}; nothing run")
    if not rfs or any(rf not in fig4 for rf in rfs):
        sys.exit(f"--rf: {a.rf!r}; Fig. 4 evaluates {a.key} under: {', '.join(sorted(fig4))}")
    evals = {rf: fig4[rf] for rf in rfs}

    committed = ROOT / "docs" / "reproduction" / a.scale / "results"
    for k, u in (("data", plan.units["data"]), (a.key, unit)):
        f = committed / f"{k}.json"
        if f.exists() and json.loads(f.read_text())["digest"] != u.digest:
            sys.exit(f"{k}: this tree's settings differ from those of {f}; nothing run")
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    data = data_path(work, plan.units["data"].digest)
    if not data.exists():
        rec = run_data(plan.units["data"], work, threads=os.cpu_count() or 1)
        f = committed / "data.json"
        if f.exists() and json.loads(f.read_text())["fingerprint"] != rec["fingerprint"]:
            sys.exit(f"data: the dataset collected here differs from the one of {f}")
        print(f"data: {rec['wall_s']:.0f} s", flush=True)

    folder = work / "runs" / a.key
    shutil.rmtree(folder, ignore_errors=True)
    dev = pick_device(a.device)
    compile_ = dev.type == "cuda" and not a.no_compile
    (tr,) = open_trainers([(method, cfg, data, folder)], dev, compile=compile_)
    if a.swap:
        parts = sorted({k.split(".")[0] for k in tr.method.state_dict()})
        if a.swap not in parts or len(steps) < 2:
            sys.exit(f"--swap: one of {', '.join(parts)}, with two --steps or more; nothing run")
    t_train = time.perf_counter()
    snaps = {}
    for s in steps:
        tr.run(progress=False, stop_after=s - tr.step)
        snaps[s] = work / "runs" / f"{a.key}-step{s}"
        shutil.rmtree(snaps[s], ignore_errors=True)
        shutil.copytree(folder, snaps[s])
        took = time.perf_counter() - t_train
        print(f"step {tr.step}: kept, {took:.0f} s of training", flush=True)
    (out / f"{run}-train.json").write_text(
        json.dumps(
            {
                "key": a.key,
                "digest": unit.digest,
                "stopped_at": tr.step,
                "train_wall_s": round(tr.wall_s, 2),
                "evals": read_evals(folder),
                "device": str(tr.device),
            },
            indent=1,
        )
    )
    device = str(tr.device)
    tr.close()
    del tr
    models = {f"step{s}": (s, None, snaps[s]) for s in steps}
    for s in steps if a.swap else []:
        ckpt = read_checkpoint(snaps[s] / CHECKPOINT_NAME)
        for b in (b for b in steps if b != s):
            other = read_checkpoint(snaps[b] / CHECKPOINT_NAME)
            for weights in ("model", "ema"):
                for k in ckpt[weights]:
                    if k.startswith(a.swap + "."):
                        ckpt[weights][k] = other[weights][k]
            name = f"step{s}-{a.swap}{b}"
            hybrid = work / "runs" / f"{a.key}-{name}"
            shutil.rmtree(hybrid, ignore_errors=True)
            shutil.copytree(snaps[s], hybrid)
            write_checkpoint(ckpt, hybrid / CHECKPOINT_NAME)  # with a fresh digest
            models[name] = (s, b, hybrid)

    for rf in rfs:
        for name, (s, b, path) in models.items():
            rec = {
                "key": f"{run}-{name}-{rf}",
                "like": evals[rf].key,
                "step": s,
                "swap": {a.swap: b} if b is not None else None,
                **run_eval(evals[rf], work, device, folder=path),
            }
            row = rec["rows"][0]
            (out / f"{rec['key']}.json").write_text(json.dumps(rec, indent=1))
            print(
                f"{rec['key']}: reward {row['avg_reward']:.2f} +- {row['avg_reward_std']:.2f}, "
                f"delay {row['mean_delay_ms']:.2f} ms, {rec['wall_s']:.0f} s",
                flush=True,
            )
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
