"""Checkpoints of a training run: configuration, state dicts, normaliser statistics and the
dataset's fingerprint in one file, written atomically; and :func:`load_run` for planning.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from macdmp.planner.models import RESUMABLE_KEYS, PlannerConfig, PlannerModels

FORMAT = "macdmp-planner-v1"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint was made with another configuration or dataset than the one given."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict and check its format tag."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointMismatchError(f"checkpoint: {path} is not a {FORMAT} checkpoint")
    return ckpt


def check_compatible(
    ckpt: dict[str, Any], cfg: PlannerConfig, fingerprint: str, path: Path | str = "checkpoint"
) -> None:
    """Refuse (CheckpointMismatchError) a checkpoint from another configuration or dataset."""
    saved = ckpt["config"]
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


def models_from_checkpoint(
    ckpt: dict[str, Any], weights: str = "ema", device: torch.device | str = "cpu"
) -> PlannerModels:
    """Rebuild PlannerModels from a checkpoint dict ('ema' or 'raw' weights), in eval mode."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights: must be 'ema' or 'raw' (got {weights!r})")
    cfg = PlannerConfig.from_dict(ckpt["config"])
    models = PlannerModels(cfg, ckpt["stats"], ckpt["rbs"])
    models.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    models.fingerprint = ckpt["fingerprint"]  # type: ignore[assignment]
    models.train_step = int(ckpt["step"])  # type: ignore[assignment]
    return models.to(device).eval().requires_grad_(False)


def load_run(
    run_dir: str | Path, device: str | torch.device | None = None, weights: str = "ema"
) -> PlannerModels:
    """The trained models of a run folder (EMA weights by default), ready for :func:`plan`.

    The returned module carries ``.cfg`` (PlannerConfig), ``.normalizer``, ``.rbs``,
    ``.fingerprint`` and ``.train_step``; ``.schedule()`` gives its noise schedule.
    """
    dev = pick_device(device)
    ckpt = read_checkpoint(Path(run_dir) / CHECKPOINT_NAME, "cpu")
    return models_from_checkpoint(ckpt, weights, dev)
