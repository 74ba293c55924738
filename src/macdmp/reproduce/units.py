"""Running the units of the work list: a dataset collection, training runs, an evaluation.

Each function returns the unit's result (a JSON-able dict, small: no checkpoint, no per-frame
trace) and leaves its product in the work folder: ``WORK/data.h5`` for the dataset,
``WORK/runs/KEY/`` for a training run. The existing stages do the work: ``collect`` for data,
the one :class:`~macdmp.methods.trainer.Trainer` (several runs stacked or packed by
``train_many``) and ``evaluate`` with the paper's protocol (held-out seeds, ``eval/protocol.py``).

Everything here is importable at top level and takes plain arguments, so that a unit can run in
a Ray worker process as well as in the ``reproduce`` process.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from macdmp.data.collect import CollectSettings, collect
from macdmp.data.format import open_h5, read_header
from macdmp.eval.evaluate import evaluate
from macdmp.methods.base import get_method
from macdmp.methods.checkpoint import is_run_dir
from macdmp.methods.stacked import train_many
from macdmp.methods.trainer import open_trainers, read_evals, read_losses
from macdmp.reproduce.plan import Unit, scenario_set

LOSS_POINTS = 100  # loss log records kept in a training result (evenly spaced)


# Products are named by their unit's digest too, so a work folder shared by several scales (or
# kept across a change of settings) never hands a unit the dataset or run of other settings.
def data_path(work: Path, digest: str) -> Path:
    """The dataset file of the data unit with this digest."""
    return Path(work) / f"data-{digest[:12]}.h5"


def run_dir(work: Path, key: str, digest: str) -> Path:
    """The run folder of the training unit ``key`` with this digest."""
    return Path(work) / "runs" / f"{key}-{digest[:12]}"


def product_path(unit: Unit, work: Path) -> Path | None:
    if unit.kind == "data":
        return data_path(work, unit.digest)
    if unit.kind == "train":
        return run_dir(work, unit.key, unit.digest)
    return None  # an evaluation makes nothing but its result


def product_exists(unit: Unit, work: Path) -> bool:
    """Whether what the unit makes for others (dataset file, run folder) is in the work folder."""
    path = product_path(unit, work)
    if unit.kind == "train":
        return is_run_dir(path)
    return path is None or path.is_file()


def _machine(device: str | None = None) -> str:
    text = f"{platform.node() or 'host'} ({platform.machine()}"
    if device and device.startswith("cuda"):
        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text + ")"


def run_data(unit: Unit, work: Path, progress: bool = False, threads: int = 1) -> dict[str, Any]:
    p = unit.params
    path = data_path(work, unit.digest)
    settings = CollectSettings(
        out=str(path),
        scenarios=list(p["scenarios"]),
        trajectories=p["trajectories"],
        frames=p["frames"],
        seed=p["seed"],
        behaviour_noise=p["behaviour_noise"],
        policies=list(p.get("policies", ())),  # a family's behaviour mix (macdmp bench)
        threads=threads,  # the simulator core's threads: the data do not depend on them
    )
    t0 = time.perf_counter()
    if not path.is_file():  # written atomically: a file there is complete
        path.parent.mkdir(parents=True, exist_ok=True)
        torch_threads = torch.get_num_threads()
        try:
            collect(settings, progress=progress)
        finally:  # Numba's thread setting is OpenMP's, so torch's too: put torch's back
            torch.set_num_threads(torch_threads)
    with open_h5(path) as f:
        fingerprint = read_header(f, path).fingerprint()
    return {
        "fingerprint": str(fingerprint),
        "command": settings.command().replace(str(path), path.name),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def _subsample(records: list[dict], n: int) -> list[dict]:
    if len(records) <= n:
        return records
    idx = sorted({round(i * (len(records) - 1) / (n - 1)) for i in range(n)})
    return [records[i] for i in idx]


def run_train_group(
    units: list[Unit],
    work: Path,
    device: str | None = None,
    progress: bool = False,
    compile: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train several runs at once: stacked as one model where they share a method and its
    shapes, else packed on one GPU (``train_many``; one after another in effect on a CPU)."""
    t0 = time.perf_counter()
    runs = []
    for u in units:
        method = u.params["method"]
        cfg = get_method(method).config_class.from_dict(u.params["config"])
        # the dataset unit it reads: "data", or the one its params name (a family's)
        data = data_path(work, u.params["inputs"][u.params.get("data", "data")])
        runs.append((method, cfg, data, run_dir(work, u.key, u.digest)))
    # a run folder of other settings (the unit's params changed) is started again
    trainers = open_trainers(runs, device, compile=compile, restart_mismatched=True)
    mode, _ = train_many(trainers, progress=progress)
    wall = time.perf_counter() - t0
    out = {}
    for u, tr in zip(units, trainers, strict=True):
        losses = read_losses(tr.run_dir)
        out[u.key] = {
            "method": u.params["method"],
            "step": tr.step,
            "steps_per_epoch": tr.cfg.steps_per_epoch,
            "train_wall_s": round(tr.wall_s, 2),
            "evals": read_evals(tr.run_dir),
            "losses": _subsample(losses, LOSS_POINTS),
            "final_loss": losses[-1] if losses else None,
            # the in-loop evaluation that chose best.pt (validation seeds), if any
            "best": dict(tr.best) if tr.best.get("step", -1) >= 0 else None,
            "device": str(tr.device),
            "packed_with": len(units),
            "trained": mode,  # "stacked" or "packed" (one run: "packed")
            "wall_s": round(wall, 2),
            "machine": _machine(str(tr.device)),
        }
    return out


def policy_spec(
    unit: Unit, work: Path, device: str | None = None, folder: Path | None = None
) -> str:
    """The ``--policy`` string of an evaluation unit (a run folder with options, or a name);
    ``folder``: another run folder in place of the unit's (the same run stopped earlier)."""
    pol = unit.params["policy"]
    if pol.get("run") is None:
        return pol["name"]
    opts = dict(pol.get("options", {}))
    if device is not None:
        opts["device"] = device
    if folder is None:
        folder = run_dir(work, pol["run"], unit.params["inputs"][pol["run"]])
    return ",".join([str(folder), *(f"{k}={v}" for k, v in opts.items())])


def run_eval(
    unit: Unit,
    work: Path,
    device: str | None = None,
    progress: bool = False,
    folder: Path | None = None,
) -> dict[str, Any]:
    p = unit.params
    t0 = time.perf_counter()
    res = evaluate(
        [policy_spec(unit, work, device, folder)],
        scenario_set(p["scenarios"]),
        [p["rf"]],
        n_seeds=p["seeds"],
        frames=p["frames"],
        progress=progress,
    )
    return {
        "rows": res["rows"],
        "per_scenario": res["per_scenario"],
        "eval_seeds": res["seeds"],
        "wall_s": round(time.perf_counter() - t0, 2),
        "machine": _machine(device),
    }


def run_unit(
    unit: Unit, work: Path, device: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """One unit, whatever its kind (a training unit alone)."""
    if unit.kind == "data":
        return run_data(unit, work, progress)
    if unit.kind == "train":
        return run_train_group([unit], work, device, progress)[unit.key]
    if unit.kind == "eval":
        return run_eval(unit, work, device, progress)
    raise ValueError(f"unit {unit.key}: unknown kind {unit.kind!r}")
