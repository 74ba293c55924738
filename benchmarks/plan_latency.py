"""Time to plan one frame for every agent (one batched diffusion run), MA-CDMP, per setting,
beside the plans' quality in the loop at the same setting.

    python benchmarks/plan_latency.py [--preset paper] [--set KEY=VALUE] [--device cuda]
        [--agents 1,9,100,1000]
        [--settings cold10,warm,...] [--run RUN_DIR --quality-frames 200 --quality-seeds 2]
        [--cpu1] [--out FILE.md]

Latency: untrained models of the preset's architecture unless ``--run`` is given (latency does
not depend on the weights). Each setting is a planner actor (macdmp.planner.PlannerActor) fed
the same random observations frame after frame, so a warm-started setting is timed on its warm
frames (the first frame of an episode plans from scratch; it is the cold row). Median over
``--repeats`` frames after warm-up (which also captures CUDA graphs and compiles). ``--cpu1``
adds one agent on one CPU core (torch.set_num_threads(1), ONNX Runtime with one thread); a
``--cpu-settings`` entry ``PRESET:SETTING`` times another preset's untrained model there, so two
architectures are compared in one run (e.g. ``paper-steer:warm0.15+onnx,fast-steer:warm0.1+fused``).

Quality (``--run``): the paper's protocol (macdmp.eval.evaluate: the four scenarios, held-out
seeds, ideal and limited RF) with that run folder at each setting, ``--quality-seeds`` seeds x
``--quality-frames`` frames: mean delay (ms) and its std over seeds.

Settings are parts joined by "+", on DPM-Solver++ 2M with the model's guidance at its default
scale (classifier 0.1; classifier-free w = 1.2 for a cfg model such as --preset paper-steer) and
one candidate:
    cold10, cold5  10 (the default, the planner's default today: the reference) or 5 steps
    warm[F]        warm start: previous plan shifted, re-noised to the level nearest F x K
                   (default 0.3), denoised with the 10-step grid's remaining steps
    skip[S]        guidance only at levels with sigma_k >= S (default 0.3); classifier
                   guidance only: a CFG model runs both halves at every level regardless
    compile, bf16  the backbones compiled, under bf16 autocast (on a GPU inside the CUDA graph)
    onnx           the backbones in ONNX Runtime (CPU)
    fused          the whole planning call as one ONNX graph, one ONNX Runtime call (CPU)
    openvino       that one graph run by OpenVINO (CPU)
e.g. warm+skip+compile+bf16, or warm0.2+skip0.5.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from macdmp.methods import load_run, pick_device
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.plan import DEFAULT_CFG, DEFAULT_GUIDE
from macdmp.planner.policy import PlannerActor
from macdmp.planner.synthetic import SyntheticWindows

FRAME_MS = 5.0
GUIDE_SIGMA = 0.3
WARM = 0.3
PARTS = {
    "compile": dict(compile=True),
    "bf16": dict(bf16=True),
    "onnx": dict(backend="onnx"),
    "fused": dict(backend="fused"),
    "openvino": dict(backend="openvino"),
}


def parse_setting(name: str) -> dict:
    """``warm+skip+bf16`` -> the actor options of that setting (see the module docstring)."""
    # the guidance scale is the model's default (classifier 0.1, CFG w = 1.2); warm is set so
    # that a cold setting stays cold on a run whose config has a warm default (paper-steer)
    opts: dict = dict(solver="dpm2", steps=10, warm=0.0)
    for part in name.split("+"):
        m = re.fullmatch(r"(cold|warm|skip)([0-9.]*)", part)
        if part in PARTS:
            opts.update(PARTS[part])
        elif m and m.group(1) == "cold":
            opts["steps"] = int(m.group(2) or 10)
        elif m and m.group(1) == "warm":
            opts["warm"] = float(m.group(2) or WARM)
        elif m and m.group(1) == "skip":
            opts["guide_sigma"] = float(m.group(2) or GUIDE_SIGMA)
        else:
            raise SystemExit(f"--settings: unknown part {part!r} of {name!r}")
    return opts


def overrides(preset: str, sets: list[str]) -> dict:
    """``["guidance=cfg", "dim_mults=1,2"]`` -> config overrides typed like the preset's."""
    base = make_config(preset).to_dict()
    out: dict = {}
    for kv in sets:
        key, _, value = kv.partition("=")
        if key not in base:
            raise SystemExit(f"--set: {key!r} is not a field of the {preset} preset")
        old = base[key]
        if isinstance(old, list):
            out[key] = [int(v) for v in value.split(",")]
        elif isinstance(old, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(old)(value)
    return out


def policy_spec(run: str, opts: dict) -> str:
    """The ``--policy RUN,k=v`` spec of a setting (what `macdmp evaluate` takes)."""
    keys = {"n_candidates": "candidates"}
    vals = []
    for k, v in opts.items():
        if isinstance(v, bool):
            v = int(v)
        vals.append(f"{keys.get(k, k)}={v}")
    return ",".join([run, *vals])


def time_setting(models, agents: int, opts: dict, repeats: int, cpu_time: bool = False) -> float:
    """Median ms per frame of a planner actor in steady state (wall time, or with ``cpu_time``
    the process's CPU time, which waiting for a shared core does not inflate)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(20, 5, (agents, 4)).astype(np.float32)
    mf = rng.normal(20, 5, (agents, 4)).astype(np.float32)
    actor = PlannerActor(models, seed=0, **opts)
    actor.reset(agents)
    cuda = models.normalizer.obs_mean.is_cuda
    for _ in range(3):  # the cold first frame, then warm frames (captures, compiles)
        actor.act(obs, mf)
    clock = time.process_time if cpu_time else time.perf_counter
    ts = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        actor.act(obs, mf)  # returns numpy: synchronised
        ts.append((clock() - t0) * 1e3)
    return statistics.median(ts)


def demand_error(models, opts: dict, frames: int = 20) -> str:
    """Mean and max |action - action of the eager torch planner| in RBs, one agent, the same
    seed and observations, over ``frames`` frames of one episode (warm frames included, each
    setting starting from its own previous plans)."""
    rng = np.random.default_rng(2)
    obs = rng.normal(20, 5, (frames, 1, 4)).astype(np.float32)
    mf = rng.normal(20, 5, (frames, 1, 4)).astype(np.float32)
    out = []
    for o in (opts, {**opts, "backend": "torch"}):
        actor = PlannerActor(models, seed=0, **o)
        actor.reset(1)
        out.append(np.concatenate([actor.act(obs[t], mf[t]) for t in range(frames)]))
    d = np.abs(out[0] - out[1])
    return f"{d.mean():.5f} (max {d.max():.5f})"


def default_scale(guidance: str) -> float:
    """The model's default guidance scale: classifier 0.1, or classifier-free w = 1.2."""
    return DEFAULT_GUIDE if guidance == "classifier" else DEFAULT_CFG


def bf16_error(models, opts: dict, agents: int = 100) -> str:
    """Mean and max |action(bf16) - action(float32)| in RBs, same draws, one cold frame."""
    from macdmp.planner.plan import Speed, plan_batch

    rng = np.random.default_rng(1)
    obs = rng.normal(20, 5, (agents, 4)).astype(np.float32)
    mf = rng.normal(20, 5, (agents, 4)).astype(np.float32)
    dev = models.normalizer.obs_mean.device
    scale = default_scale(models.cfg.guidance)
    out = []
    for bf16 in (False, True):
        gen = torch.Generator(device=dev).manual_seed(0)
        a, _ = plan_batch(
            models, obs, mf, "dpm2", opts.get("steps", 10), scale, 1, gen,
            guide_min_sigma=opts.get("guide_sigma", 0.0), speed=Speed(bf16=bf16),
        )  # fmt: skip
        out.append(a.double())
    d = (out[1] - out[0]).abs()
    return f"{float(d.mean()):.3f} (max {float(d.max()):.3f})"


def quality(run: str, opts: dict, frames: int, seeds: int, device: str) -> dict[str, str]:
    """Mean delay (ms) +- std over seeds, ideal and limited RF, with the paper's protocol, and
    the decision time per frame for all agents of all networks in one batch."""
    from macdmp.eval.evaluate import evaluate
    from macdmp.sim.config import PAPER_SCENARIOS

    spec = policy_spec(run, {**opts, "device": device})
    res = evaluate([spec], PAPER_SCENARIOS, n_seeds=seeds, frames=frames, progress=False)
    rows = res["rows"]
    out = {r["rf"]: f"{r['mean_delay_ms']:.2f} +- {r['mean_delay_ms_std']:.2f}" for r in rows}
    row = res["rows"][0]
    out["act"] = f"{row['act_ms_per_frame']:.1f} ({row['agents_per_call']} agents)"
    return out


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or "cpu"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field of the untrained model (e.g. guidance=cfg); repeatable",
    )
    ap.add_argument("--device", default=None)
    ap.add_argument("--agents", default=None, help="default 1,9,100,1000 on a GPU, else 1,9")
    ap.add_argument("--settings", default="cold10,cold5,warm,skip,warm+skip", help="timed")
    ap.add_argument(
        "--quality-settings",
        default=None,
        help="evaluated with --run (default: --settings without the +compile ones, whose plans "
        "equal the uncompiled ones to float rounding, tests/test_gpu.py); '' for none",
    )
    ap.add_argument("--cpu1", action="store_true", help="also one agent on one CPU core")
    ap.add_argument("--cpu-settings", default="cold10,warm+skip,cold10+onnx,warm+skip+onnx")
    ap.add_argument(
        "--cpu-rounds", type=int, default=1, help="--cpu1: time every setting this many times"
    )
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="5 repeats (a smoke run)")
    ap.add_argument("--run", default=None, help="trained run folder: its weights, and quality")
    ap.add_argument("--quality-frames", type=int, default=200)
    ap.add_argument("--quality-seeds", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    a = ap.parse_args()
    if a.quick:
        a.repeats = 5
    device = pick_device(a.device)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)
        if a.out:  # rewritten after every line, so a run stopped by a time limit leaves its rows
            out = Path(a.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(out)

    def build(dev: torch.device, preset: str | None = None):
        if a.run:
            return load_run(a.run, dev).eval().requires_grad_(False)
        if preset:  # another preset of a --cpu-settings entry, as it is
            cfg = make_config(preset)
        else:
            cfg = make_config(a.preset, **overrides(a.preset, a.set))
        data = SyntheticWindows(cfg.horizon, cfg.gamma)
        torch.manual_seed(0)
        return PlannerModels(cfg, data.stats, data.rbs).to(dev).eval().requires_grad_(False)

    # every --cpu-settings entry is checked before any timing: PRESET:SETTING
    cpu_runs = []
    for name in (s for s in a.cpu_settings.split(",") if s) if a.cpu1 else ():
        preset, _, setting = name.rpartition(":")
        if preset and a.run:
            raise SystemExit(f"--cpu-settings: {name!r} names a preset; not with --run")
        if preset and preset not in PlannerModels.presets:
            raise SystemExit(
                f"--cpu-settings: {preset!r} is not one of {tuple(PlannerModels.presets)}"
            )
        cpu_runs.append((name, preset or None, parse_setting(setting)))
    models = build(device)
    cfg = models.cfg
    default_agents = "1,9,100,1000" if device.type == "cuda" else "1,9"
    agents = [int(x) for x in (a.agents or default_agents).split(",") if x]
    settings = [s for s in a.settings.split(",") if s]
    what = f"run {a.run}" if a.run else f"preset {a.preset} {' '.join(a.set)}, untrained"
    say(
        f"MA-CDMP plan latency: {what} (H={cfg.horizon}, K={cfg.n_diffusion_steps}, width "
        f"{cfg.dim} x {cfg.dim_mults}); median of {a.repeats} frames; {machine(device)}"
    )
    g = cfg.guidance
    say(
        f"guidance: {'classifier' if g == 'classifier' else 'classifier-free'} at "
        f"{default_scale(g)}; warm = re-noise to ~{WARM} K; skip = guide where sigma_k >= "
        f"{GUIDE_SIGMA}"
    )
    if settings:
        say()
        say("| setting | " + " | ".join(f"{n} agents (ms)" for n in agents) + " | within 5 ms |")
        say("|---|" + "---|" * (len(agents) + 1))
    for name in settings:
        opts = parse_setting(name)
        ms = [time_setting(models, n, opts, a.repeats) for n in agents]
        ok = ", ".join(str(n) for n, t in zip(agents, ms, strict=True) if t <= FRAME_MS) or "none"
        say(f"| {name} | " + " | ".join(f"{t:.2f}" for t in ms) + f" | {ok} |")
    if any(parse_setting(n).get("bf16") for n in settings):
        say()
        say(
            "bf16 against float32, the same draws, one cold frame of 100 agents: "
            "|action difference| in RBs, mean (max)"
        )
        say()
        say("| setting | bf16 error (RBs) |\n|---|---|")
        for name in settings:
            opts = parse_setting(name)
            if opts.get("bf16"):
                say(f"| {name} | {bf16_error(models, opts)} |")
    if a.cpu1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cpu_models = {
            p: build(torch.device("cpu"), p) for p in dict.fromkeys(r[1] for r in cpu_runs)
        }
        say()
        say(f"One agent on one CPU core (torch.set_num_threads(1)): {machine(torch.device('cpu'))}")
        say()
        say(
            "| setting | 1 agent, 1 core: wall (ms) | CPU time (ms) | CPU time within 5 ms | "
            "within 1 ms | demand vs eager torch (RBs): mean (max) |"
        )
        say("|---|---|---|---|---|---|")
        cpu_ms: list[list[float]] = []  # per round, per setting
        for _ in range(a.cpu_rounds):  # rounds interleave the settings: the same load for all
            cpu_ms.append([])
            for name, preset, opts in cpu_runs:
                m = cpu_models[preset]
                t = time_setting(m, 1, opts, a.repeats)
                c = time_setting(m, 1, opts, a.repeats, cpu_time=True)
                cpu_ms[-1].append(c)
                err = "-" if opts.get("backend", "torch") == "torch" else demand_error(m, opts)
                say(
                    f"| {name} | {t:.2f} | {c:.2f} | {'yes' if c <= 5 else 'no'} | "
                    f"{'yes' if c <= 1 else 'no'} | {err} |"
                )
        if a.cpu_rounds > 1 and len(cpu_runs) > 1:
            say()
            say(
                f"Over the {a.cpu_rounds} rounds: the median CPU time, and the speed-up over "
                f"the first setting ({cpu_runs[0][0]}): its CPU time over this one's in the same "
                "round, the median of the rounds (smallest, largest)"
            )
            say()
            say("| setting | CPU time (ms), median | speed-up, median (range) |\n|---|---|---|")
            for j, (name, _, _) in enumerate(cpu_runs):
                ratios = [r[0] / r[j] for r in cpu_ms]
                say(
                    f"| {name} | {statistics.median(r[j] for r in cpu_ms):.2f} | "
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
                )
        torch.set_num_threads(threads)
    qset = a.quality_settings
    if qset is None:
        qset = ",".join(s for s in settings if "compile" not in s.split("+"))
    qnames = [s for s in qset.split(",") if s] if a.run else []
    if qnames:
        say()
        say(
            f"Quality in the loop: mean delay (ms) +- std over {a.quality_seeds} held-out seeds, "
            f"{a.quality_frames} frames, the four paper scenarios (macdmp.eval.evaluate)"
        )
        say()
        say("| setting | ideal RF delay (ms) | limited RF delay (ms) | decision ms per frame |")
        say("|---|---|---|---|")
        for name in qnames:
            q = quality(a.run, parse_setting(name), a.quality_frames, a.quality_seeds, device.type)
            say(f"| {name} | {q.get('ideal', '-')} | {q.get('limited', '-')} | {q['act']} |")
    print(f"(command: python {' '.join(sys.argv)})")


if __name__ == "__main__":
    main()
