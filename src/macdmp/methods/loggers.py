"""Training logs where people look: TensorBoard (and Weights & Biases where installed).

``macdmp train --logger tensorboard`` (or ``wandb``) sends what the trainer logs to a viewer as
well: every logged step's losses and learning rate (``train/loss``, ..., ``train/lr``, the
lines of ``losses.jsonl``) and every in-loop evaluation's QoS (``eval/avg_reward``,
``eval/mean_delay_ms``, ..., the lines of ``evals.jsonl``), each a scalar at the record's
training step. Every numeric value of a record is written except ``step`` and ``epoch``
(non-finite ones too: a NaN loss should be seen); other values are skipped.

The JSONL files stay the record: they are written whatever the logger, and everything the
project reads (learning curves, reports, resumption) reads them; a logger is only a view.

- ``none`` (the default): nothing beyond the JSONL files.
- ``tensorboard``: event files under ``RUN_DIR/tensorboard/`` (``pip install
  'macdmp[tensorboard]'``). View them with ``tensorboard --logdir RUN_DIR/tensorboard``, or
  several runs side by side with ``tensorboard --logdir DIR`` on a folder above them.
- ``wandb``: a run in the W&B project ``macdmp``, named after the run folder, with the run's
  configuration (``pip install wandb``, then ``wandb login``, or ``WANDB_MODE=offline`` to keep
  it on disk under ``RUN_DIR/wandb/``). Several runs trained together in one process (packed
  training) are separate W&B runs.

Resuming: a resumed run appends to the same views. TensorBoard writes a new event file in the
same ``tensorboard/`` folder (TensorBoard reads the folder's files as one run); given the step
the run resumes from (``start_step``), the points a previous writer logged after it are hidden,
as the trainer drops the JSONL lines written after the checkpoint. A W&B run's id is derived
from the run folder's path, so a resumed run continues the same W&B run (``resume="allow"``);
W&B cannot hide points, and ignores steps at or below those it already holds.

The optional packages are imported only when such a logger is made; :func:`check_logger` checks
that they are installed when the configuration is built, before any work.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOGGERS = ("none", "tensorboard", "wandb")
# Several W&B runs alive in one process (reinit="create_new") came with wandb 0.19.10.
WANDB_MIN_VERSION = (0, 19, 10)
TENSORBOARD_DIR = "tensorboard"
SKIPPED_KEYS = frozenset({"step", "epoch"})

_INSTALL = {
    "tensorboard": "pip install 'macdmp[tensorboard]'",
    "wandb": "pip install wandb",
}


def check_logger(name: str) -> str:
    """``name`` if it is one of :data:`LOGGERS` whose package is installed, else a ValueError
    naming the field, the allowed values, or how to install the package."""
    if name not in LOGGERS:
        raise ValueError(f"logger: {name!r} is not one of {', '.join(LOGGERS)}")
    if name == "none":
        return name
    if importlib.util.find_spec(name) is None:
        raise ValueError(
            f"logger: {name!r} needs the {name} package, which is not installed; "
            f"install it with: {_INSTALL[name]}"
        )
    if name == "wandb":
        try:
            version = importlib.metadata.version("wandb")
        except importlib.metadata.PackageNotFoundError:  # importable, but not installed as such
            return name
        if _version_tuple(version) < WANDB_MIN_VERSION:
            need = ".".join(map(str, WANDB_MIN_VERSION))
            raise ValueError(
                f"logger: 'wandb' needs wandb>={need} (installed: {version}); "
                f"upgrade it with: pip install -U wandb"
            )
    return name


def _version_tuple(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: "0.19.10rc1" -> (0, 19, 10)."""
    parts = []
    for part in version.split(".")[:3]:
        m = re.match(r"\d+", part)
        if m is None:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The values of a log record a logger writes: every int or float (not bool, finite or
    not), except ``step`` and ``epoch``."""
    return {
        str(k): float(v)
        for k, v in record.items()
        if k not in SKIPPED_KEYS and isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def run_id(run_dir: str | Path) -> str:
    """A stable id of a run folder (its absolute path's sha256, 16 hex digits): the W&B run id,
    the same when the run is resumed."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class Logger:
    """Where a run's log records go beyond the JSONL files; this one sends them nowhere.

    ``log(group, step, record)`` writes ``record``'s numbers (:func:`scalars`) as scalars
    ``f"{group}/{key}"`` at training step ``step`` (groups: ``"train"``, ``"eval"``).
    ``close()`` flushes and closes; it may be called again, and logging after it is an error.
    Also a context manager (closed on exit).
    """

    name = "none"

    def __init__(self) -> None:
        self.closed = False

    def log(self, group: str, step: int, record: Mapping[str, Any]) -> None:
        if self.closed:
            raise RuntimeError(f"logger {self.name!r}: log() after close()")
        values = scalars(record)
        if values:
            self._write({f"{group}/{k}": v for k, v in values.items()}, int(step))

    def _write(self, values: dict[str, float], step: int) -> None:
        """Write the scalars ``values`` (tag -> value) at ``step``."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close()

    def _close(self) -> None:
        """Flush and close (called once)."""

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullLogger(Logger):
    """``--logger none``: the JSONL files only."""


class TensorBoardLogger(Logger):
    """``--logger tensorboard``: event files under ``run_dir/tensorboard/``.

    ``start_step``: the step the run starts from (0 for a new run, the checkpoint's when
    resumed); points an earlier writer of the folder logged after it are hidden from
    TensorBoard, as the trainer drops the JSONL lines written after the checkpoint.
    Every :meth:`log` is flushed to disk, so TensorBoard shows a running run as it goes.
    """

    name = "tensorboard"

    def __init__(self, run_dir: str | Path, start_step: int | None = None) -> None:
        check_logger(self.name)
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter  # optional dependency

        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        purge = None if start_step is None else int(start_step) + 1
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)

    def _write(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def _close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger(Logger):
    """``--logger wandb``: a W&B run in project ``macdmp``, named ``run_name``, with the run's
    configuration, its id derived from the run folder (:func:`run_id`) so that a resumed run
    continues it; W&B's files go under ``run_dir/wandb/``. Each logger holds its own W&B run
    (``reinit="create_new"``), so runs trained together in one process stay apart."""

    name = "wandb"

    def __init__(
        self,
        run_dir: str | Path,
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        check_logger(self.name)
        super().__init__()
        import wandb  # optional dependency

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.id = run_id(run_dir)
        self.run = wandb.init(
            project="macdmp",
            name=run_name or run_dir.name,
            config=dict(config or {}),
            dir=str(run_dir),
            resume="allow",
            id=self.id,
            reinit="create_new",
        )

    def _write(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def _close(self) -> None:
        self.run.finish()


def make_logger(
    name: str,
    run_dir: str | Path,
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    start_step: int | None = None,
) -> Logger:
    """The logger ``name`` (one of :data:`LOGGERS`) of the run folder ``run_dir``.

    ``run_name`` (default: the folder's name) and ``config`` name and describe the W&B run;
    ``start_step`` (TensorBoard) is the step the run starts from, 0 or the checkpoint's.
    """
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardLogger(run_dir, start_step=start_step)
    if name == "wandb":
        return WandbLogger(run_dir, run_name=run_name, config=config)
    return NullLogger()
