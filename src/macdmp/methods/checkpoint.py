"""The one checkpoint format of every run folder, written atomically, and :func:`load_run`.

A checkpoint is a dict (torch.save) with:
  format "macdmp-run-v1"; method (registry name) and method_version; config (the method's
  config as a dict); fingerprint (the dataset's); rbs and stats (normalisation statistics);
  step and wall_s; model and ema (state dicts); optimizer; rng (the trainer's generator state);
  log_acc (the loss sums since the last log line).
Files of the older "macdmp-planner-v1" format (MA-CDMP only, before the method interface) are
read on purpose as method "ma-cdmp", version 1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from macdmp.methods.base import RESUMABLE_KEYS, Method, TrainConfig, get_method

FORMAT = "macdmp-run-v1"
LEGACY_FORMATS = ("macdmp-planner-v1",)
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint was made with another method, configuration or dataset than the one given."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the GPU when there is one, else the CPU.

    On CUDA it also turns on cuDNN's autotuner (``torch.backends.cudnn.benchmark``), process-wide:
    without it cuDNN's heuristic picks FFT convolutions for the U-Net's longer sequences, and one
    training step at horizon 64 took 2.6 times as long on an H200 (45.7 against 120.1 steps/s,
    captured; ``docs/results/gpu-2026-11-30d``). The tuning runs once per input shape; the
    algorithms it picks may differ between processes, so GPU results are not bit-identical
    across runs (they were not before either: CUDA's backward passes use atomics)."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but no CUDA device is available")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict, check its format tag and bring older formats up to date."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise CheckpointMismatchError(f"checkpoint: {path} cannot be read ({exc})") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt in LEGACY_FORMATS:
        ckpt = dict(ckpt, format=FORMAT, method="ma-cdmp", method_version=1)
        ckpt.setdefault("wall_s", 0.0)
    elif fmt != FORMAT:
        raise CheckpointMismatchError(
            f"checkpoint: {path} is not a {FORMAT} checkpoint (format {fmt!r})"
        )
    return ckpt


def check_compatible(
    ckpt: dict[str, Any],
    method: str,
    cfg: TrainConfig,
    fingerprint: str,
    path: Path | str = "checkpoint",
) -> None:
    """Refuse (CheckpointMismatchError) a checkpoint of another method, config or dataset."""
    if ckpt["method"] != method:
        raise CheckpointMismatchError(
            f"{path} holds a {ckpt['method']!r} run, not {method!r}. Use a new --out folder."
        )
    saved = type(cfg).from_dict(ckpt["config"]).to_dict()
    now = cfg.to_dict()
    diff = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}"
        for k in sorted(now)
        if k not in RESUMABLE_KEYS and saved.get(k) != now[k]
    ]
    if diff:
        raise CheckpointMismatchError(
            f"{path} was trained with another configuration; differing fields: "
            + "; ".join(diff)
            + ". Use a new --out folder, or the same settings to resume."
        )
    if ckpt["fingerprint"] != fingerprint:
        raise CheckpointMismatchError(
            f"{path} was trained on another dataset (fingerprint {ckpt['fingerprint']!r}, "
            f"this dataset {fingerprint!r}). Use a new --out folder."
        )


def method_from_checkpoint(
    ckpt: dict[str, Any], weights: str = "ema", device: torch.device | str = "cpu"
) -> Method:
    """Rebuild a trained method from a checkpoint dict ('ema' or 'raw' weights), in eval mode.

    The module carries ``.cfg``, ``.rbs``, ``.fingerprint`` and ``.train_step``.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights: must be 'ema' or 'raw' (got {weights!r})")
    cls = get_method(ckpt["method"])
    if int(ckpt["method_version"]) > cls.version:
        raise CheckpointMismatchError(
            f"checkpoint: {ckpt['method']} version {ckpt['method_version']} is newer than this "
            f"code's version {cls.version}; update macdmp"
        )
    cfg = cls.config_class.from_dict(ckpt["config"])
    method = cls(cfg, ckpt["stats"], ckpt["rbs"])
    method.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    method.fingerprint = ckpt["fingerprint"]  # type: ignore[assignment]
    method.train_step = int(ckpt["step"])  # type: ignore[assignment]
    return method.to(device).eval().requires_grad_(False)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CHECKPOINT_NAME).is_file()


def load_run(
    run_dir: str | Path, device: str | torch.device | None = None, weights: str = "ema"
) -> Method:
    """The trained method of a run folder (EMA weights by default), on ``device``."""
    run = Path(run_dir)
    if not is_run_dir(run):
        raise FileNotFoundError(
            f"run: {run} is not a training run folder (no {CHECKPOINT_NAME}); train one with "
            "`macdmp train --data FILE --out RUN_DIR`"
        )
    ckpt = read_checkpoint(run / CHECKPOINT_NAME, "cpu")
    return method_from_checkpoint(ckpt, weights, pick_device(device))
