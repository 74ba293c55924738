"""Training throughput of the one trainer: eager, captured (CUDA graph), compiled, and packed.

    python benchmarks/train_speed.py [--preset paper|demo] [--method ma-cdmp] [--device DEV]
                                     [--modes eager,captured,tf32,bf16,compiled+tf32,...]
                                     [--batch B] [--set KEY=VALUE] [--quick]

Each mode trains fresh runs of the preset on synthetic windows with the real shapes (the step's
cost does not depend on content) and prints, per mode, the median steps/s over repeated timing
windows for one run and for all runs together, the projected time for 100,000 steps of one run,
and the one-off preparation time (warm-up steps, compilation and graph capture).
  eager      the step as Python launches it (the CPU path)
  captured   the whole step replayed as one CUDA graph
  compiled   the backbones compiled by torch.compile, inside the captured graph
  packedR    R captured runs in one process, each replaying on its own CUDA stream
  stackedR   R runs (seeds 0..R-1) stacked as one model (macdmp.methods.stacked): one vmapped
             loss, one captured graph for all R; steps/s per run is the stacked step's rate
  stackedR+compile  the same with the whole vmapped loss (forward and backward) and the
             clipping compiled by torch.compile, inside the captured graph (R=1: one run)
  stackedR+native, stackedR+rows  the stacked runs' group norms by vmap's own rule (native)
             or as layer_norm over rows (macdmp.methods.stacked.NORMS); without either, the
             stacked trainer's default
  procsR     R separate processes, each one captured run, started together
  MODE+tf32  the mode with TF32 matmuls (the configuration field tf32=true)
  MODE+bf16  the mode with the loss's forward under bf16 autocast (bf16=true)
  MODE+streams  the mode with the loss's independent parts on CUDA streams of their own
             (streams=true, the configuration's default; macdmp.methods.branches); the
             other modes run with streams=false, as measured before it existed
  MODE+flat  the mode with the update after the backward (clipping, Adam, EMA) over flat
             buffers (flat=true, the configuration's default; macdmp.methods.flat); the other
             modes run with flat=false, as measured before it existed. stackedR+flat: the
             stacked runs' update over (K, P) buffers (StackedTrainer(update="flat"))
  tf32, bf16, streams, flat, ...  short for captured+tf32, captured+bf16, ...
Targets on one H200 (paper preset, issue 31): one run's 100,000 steps in 6 min (bar) or 3 min
(goal); eight stacked runs at least 6x the total throughput of one captured run (eight seeds of
100,000 steps in 15 min, bar; 8 min, goal).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from macdmp.methods import Trainer, get_method, make_config, pick_device
from macdmp.methods.config import parse_sets
from macdmp.methods.stacked import DEFAULT_NORM, NORMS, StackedTrainer
from macdmp.planner.synthetic import SyntheticWindows

TARGET_STEPS = 100_000
BAR_S, GOAL_S = 6 * 60, 3 * 60


def overrides(a) -> dict:
    """The configuration fields that --batch and --set change."""
    over = parse_sets(a.method, a.set)
    if a.batch:
        over["batch_size"] = a.batch
    return over


SWITCHES = ("tf32", "bf16", "streams", "flat")  # configuration fields of how a GPU step is computed
STACKED_ONLY = ("compile", *NORMS)  # the trainer's compile; how group norms are computed
FLAGS = (*SWITCHES, *STACKED_ONLY)


def parse_mode(mode: str) -> tuple[str, dict]:
    """``"compiled+tf32+bf16"`` -> ("compiled", {"tf32": True, "bf16": True}); a mode of
    switches only is the captured run with them."""
    parts = mode.split("+")
    base = "captured" if parts[0] in SWITCHES else parts[0]
    flags = parts if parts[0] in SWITCHES else parts[1:]
    bad = [f for f in flags if f not in FLAGS]
    if not base.startswith("stacked"):
        bad += [f"{f} (stacked modes only)" for f in flags if f in STACKED_ONLY]
    if len(set(flags) & set(NORMS)) > 1:
        bad.append(f"{' and '.join(f for f in flags if f in NORMS)} (one norm at a time)")
    if bad or len(set(flags)) != len(flags):
        raise SystemExit(
            f"--modes: unknown or repeated switch in {mode!r} (switches: "
            f"{', '.join(SWITCHES)}; {', '.join(STACKED_ONLY)} after stackedR): {', '.join(bad)}"
        )
    return base, {f: True for f in flags}


def measure(
    method: str,
    preset: str,
    device: str,
    runs: int,
    capture: bool,
    compile: bool,
    a,
    switches: dict | None = None,
    stacked: bool = False,
    norm: str = DEFAULT_NORM,
) -> dict:
    # streams and flat are on by default in the configuration; here a mode has them only when
    # it says so (+streams, +flat), so that the modes keep the meaning of the earlier tables
    fields = {"streams": False, "flat": False, **overrides(a), **(switches or {})}
    cfg = make_config(method, preset, max_steps=10**9, **fields)
    data = SyntheticWindows(cfg.horizon, cfg.gamma, reward=cfg.reward)
    with tempfile.TemporaryDirectory() as root:
        trs = [
            Trainer(
                method,
                cfg.replace(seed=k),
                data,
                f"{root}/{k}",
                device,
                capture=capture,
                compile=compile,
            )
            for k in range(runs)
        ]
        t0 = time.perf_counter()
        if stacked:  # one stacked model: its step is every run's step
            update = "flat" if fields["flat"] else "tensors"
            st = StackedTrainer(trs, norm=norm, update=update)
            st.prepare()
            trs = [st]
        else:
            for tr in trs:
                tr.method.train()
                tr.prepare()
        prepare_s = time.perf_counter() - t0
        for _ in range(a.warmup):
            for tr in trs:
                tr.train_step()
        rates = []
        for _ in range(a.repeats):
            for tr in trs:
                tr.sync()
            t0 = time.perf_counter()
            for _ in range(a.window):
                for tr in trs:
                    tr.train_step()
            for tr in trs:
                tr.sync()
            rates.append(a.window / (time.perf_counter() - t0))
        if stacked:
            st.close()
    return {"rate": statistics.median(rates), "runs": runs, "prepare_s": prepare_s}


def measure_procs(a, runs: int) -> dict:
    """R processes, each measuring one captured run; their rates add up."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--preset",
        a.preset,
        "--method",
        a.method,
        "--warmup",
        str(a.warmup),
        "--window",
        str(a.window),
        "--repeats",
        str(a.repeats),
    ]
    if a.device:
        cmd += ["--device", a.device]
    if a.batch:
        cmd += ["--batch", str(a.batch)]
    for item in a.set:
        cmd += ["--set", item]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(runs)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return {
        "rate": statistics.median(o["rate"] for o in outs),
        "total": sum(o["rate"] for o in outs),
        "runs": runs,
        "prepare_s": max(o["prepare_s"] for o in outs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--method", default="ma-cdmp")
    ap.add_argument("--device", default=None)
    ap.add_argument("--modes", default=None, help="comma list (default: all that apply)")
    ap.add_argument("--quick", action="store_true", help="few steps (a smoke run)")
    ap.add_argument("--batch", type=int, default=0, help="override the preset's batch size")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the method's configuration (e.g. horizon=64); repeatable",
    )
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    dw, dn, dr = (3, 5, 3) if a.quick else (30, 200, 5)
    a.warmup = dw if a.warmup is None else a.warmup
    a.window = dn if a.window is None else a.window
    a.repeats = dr if a.repeats is None else a.repeats
    dev = pick_device(a.device)
    cuda = dev.type == "cuda"
    if a.child:
        r = measure(a.method, a.preset, str(dev), 1, True, False, a)
        print(json.dumps({"rate": r["rate"], "prepare_s": r["prepare_s"]}))
        return
    get_method(a.method)
    try:
        over = overrides(a)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    default = "eager,captured,compiled,packed2,packed4,packed8,stacked8,procs4" if cuda else "eager"
    modes = (a.modes or default).split(",")
    for mode in modes:  # refuse a bad mode before any measurement
        kind, sw = parse_mode(mode)
        known = re.fullmatch(r"eager|captured|compiled|packed\d+|stacked\d+|procs\d+", kind)
        known = known is not None
        if not known or (kind.startswith("procs") and sw):
            raise SystemExit(f"--modes: unknown mode {mode!r}")
    if not cuda and any(set(parse_mode(m)[1]) - set(STACKED_ONLY) for m in modes):
        print("note: tf32, bf16 and streams act on CUDA only; on this device they change nothing")
    cfg = make_config(a.method, a.preset, **over)
    name = torch.cuda.get_device_name(dev) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"{a.method} {a.preset} preset, batch {cfg.batch_size}, H {cfg.horizon}; {name}; "
        f"torch {torch.__version__}; median of {a.repeats} windows of {a.window} steps"
    )
    print()
    print("| mode | runs | steps/s per run | steps/s all runs | 100k steps, one run | prepare |")
    print("|---|---|---|---|---|---|")
    base = None
    rows = []
    for mode in modes:
        kind, sw = parse_mode(mode)
        if kind == "eager":
            r = measure(a.method, a.preset, str(dev), 1, False, False, a, sw)
        elif kind == "captured":
            r = measure(a.method, a.preset, str(dev), 1, True, False, a, sw)
        elif kind == "compiled":
            r = measure(a.method, a.preset, str(dev), 1, True, True, a, sw)
        elif kind.startswith("packed"):
            r = measure(a.method, a.preset, str(dev), int(kind[6:]), True, False, a, sw)
        elif kind.startswith("stacked"):
            n, comp = int(kind[7:]), sw.pop("compile", False)
            norm = next((f for f in NORMS if sw.pop(f, False)), DEFAULT_NORM)
            r = measure(a.method, a.preset, str(dev), n, cuda, comp, a, sw, True, norm)
        elif kind.startswith("procs") and not sw:
            r = measure_procs(a, int(kind[5:]))
        else:
            raise SystemExit(f"--modes: unknown mode {mode!r}")
        total = r.get("total", r["rate"] * r["runs"])
        if mode == "captured":
            base = total
        proj = TARGET_STEPS / r["rate"]
        ratio = f" ({total / base:.2f}x captured)" if base and mode != "captured" else ""
        print(
            f"| {mode} | {r['runs']} | {r['rate']:.1f} | {total:.1f}{ratio} | "
            f"{proj / 60:.1f} min | {r['prepare_s']:.1f} s |",
            flush=True,
        )
        rows.append({"mode": mode, **r, "total": total, "proj_100k_s": proj})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"method": a.method, "preset": a.preset, "device": name,
                       "torch": torch.__version__, "window": a.window, "repeats": a.repeats,
                       "warmup": a.warmup, "rows": rows}, f, indent=1)  # fmt: skip
    print(f"\ntargets (one H200, issue 31): one run's 100,000 steps in {BAR_S // 60} min (bar), "
          f"{GOAL_S // 60} min (goal); stacked8 total >= 6x one captured run")  # fmt: skip


if __name__ == "__main__":
    main()
