"""The training loggers (macdmp.methods.loggers): TensorBoard event files beside the JSONL logs,
read back with TensorBoard's own reader; W&B only where installed, offline."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from macdmp.methods import loggers
from macdmp.methods.loggers import (
    LOGGERS,
    Logger,
    NullLogger,
    TensorBoardLogger,
    check_logger,
    make_logger,
    run_id,
    scalars,
)

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard not installed")


def train_rec(step: int, loss: float, lr: float) -> dict:
    return {
        "step": step,
        "epoch": step / 10,
        "loss": loss,
        "mse": loss / 2,
        "lr": lr,
        "wall_s": 1.5,
    }


def eval_rec(step: int, delay: float) -> dict:
    return {
        "step": step,
        "epoch": step / 10,
        "avg_reward": -1.0,
        "mean_delay_ms": delay,
        "mean_delay_ms_std": 0.5,
        "loss_rate": 0.01,
        "eval_s": 2.0,
    }


def read_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# -- check_logger ------------------------------------------------------------------------------
def test_loggers_names():
    assert LOGGERS == ("none", "tensorboard", "wandb")
    assert check_logger("none") == "none"


@pytest.mark.parametrize("bad", ["x", "TensorBoard", "", "tb"])
def test_check_logger_unknown_names_field_and_allowed(bad):
    with pytest.raises(ValueError) as e:
        check_logger(bad)
    assert str(e.value) == f"logger: {bad!r} is not one of none, tensorboard, wandb"
    with pytest.raises(ValueError, match="^logger: "):
        make_logger(bad, "unused")


@pytest.mark.parametrize(
    ("name", "install"),
    [("tensorboard", "pip install 'macdmp[tensorboard]'"), ("wandb", "pip install wandb")],
)
def test_check_logger_missing_package_says_how_to_install(monkeypatch, tmp_path, name, install):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        loggers.importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a)
    )
    with pytest.raises(ValueError) as e:
        check_logger(name)
    msg = str(e.value)
    assert msg.startswith(f"logger: {name!r}") and install in msg
    with pytest.raises(ValueError, match="^logger: "):
        make_logger(name, tmp_path)
    assert not (tmp_path / "tensorboard").exists()


@needs_tensorboard
def test_check_logger_tensorboard_installed():
    assert check_logger("tensorboard") == "tensorboard"


def test_check_logger_old_wandb(monkeypatch):
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda n, *a: object())
    monkeypatch.setattr(loggers.importlib.metadata, "version", lambda n: "0.16.2")
    with pytest.raises(ValueError, match=r"logger: 'wandb' needs wandb>=0\.19\.10.*0\.16\.2"):
        check_logger("wandb")
    monkeypatch.setattr(loggers.importlib.metadata, "version", lambda n: "0.21.0rc1")
    assert check_logger("wandb") == "wandb"


# -- what is written ---------------------------------------------------------------------------
def test_scalars_numbers_only_without_step_epoch():
    rec = {
        "step": 3,
        "epoch": 0.3,
        "loss": 1.25,
        "n": 7,
        "np": np.float32(0.5),
        "nan": float("nan"),
        "inf": float("inf"),
        "flag": True,
        "npflag": np.bool_(False),
        "name": "abc",
        "none": None,
        "list": [1.0],
    }
    out = scalars(rec)
    assert set(out) == {"loss", "n", "np", "nan", "inf"}
    assert out["loss"] == 1.25 and out["n"] == 7.0 and out["np"] == 0.5
    assert math.isnan(out["nan"]) and out["inf"] == math.inf
    assert all(type(v) is float for v in out.values())


def test_null_logger_does_nothing(tmp_path):
    log = make_logger("none", tmp_path / "run", run_name="run", config={"lr": 1e-3})
    assert type(log) is NullLogger and isinstance(log, Logger)
    log.log("train", 1, train_rec(1, 0.5, 1e-3))
    log.log("eval", 1, eval_rec(1, 12.0))
    log.close()
    log.close()
    assert not (tmp_path / "run").exists()


def test_log_after_close_is_an_error():
    log = NullLogger()
    log.close()
    with pytest.raises(RuntimeError, match="after close"):
        log.log("train", 1, {"loss": 1.0})


def test_run_id_stable_per_folder(tmp_path):
    a = run_id(tmp_path / "a")
    assert a == run_id(tmp_path / "a") == run_id(tmp_path / "x" / ".." / "a")
    assert a != run_id(tmp_path / "b")
    assert len(a) == 16 and all(c in "0123456789abcdef" for c in a)


# -- tensorboard -------------------------------------------------------------------------------
@needs_tensorboard
def test_tensorboard_writes_readable_scalars(tmp_path):
    run_dir = tmp_path / "run"
    with make_logger("tensorboard", run_dir, run_name="run", config={"lr": 1e-3}) as log:
        assert isinstance(log, TensorBoardLogger)
        for step, loss, lr in [(10, 1.0, 1e-3), (20, 0.5, 5e-4)]:
            log.log("train", step, train_rec(step, loss, lr))
        log.log("eval", 20, eval_rec(20, 42.5))
        log.log("train", 30, {"step": 30, "epoch": 3.0, "loss": float("nan"), "lr": 1e-4})
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    got = read_scalars(run_dir)
    assert set(got) == {
        "train/loss",
        "train/mse",
        "train/lr",
        "train/wall_s",
        "eval/avg_reward",
        "eval/mean_delay_ms",
        "eval/mean_delay_ms_std",
        "eval/loss_rate",
        "eval/eval_s",
    }
    assert [s for s, _ in got["train/loss"]] == [10, 20, 30]
    assert got["train/loss"][:2] == [(10, 1.0), (20, 0.5)]
    assert math.isnan(got["train/loss"][2][1])
    assert [s for s, _ in got["train/lr"]] == [10, 20, 30]
    assert [v for _, v in got["train/lr"]] == pytest.approx([1e-3, 5e-4, 1e-4])
    assert got["eval/mean_delay_ms"] == [(20, 42.5)]


@needs_tensorboard
def test_tensorboard_close_idempotent(tmp_path):
    log = make_logger("tensorboard", tmp_path, run_name=tmp_path.name, config={})
    log.log("train", 1, train_rec(1, 2.0, 1e-3))
    log.close()
    log.close()
    assert log.closed
    with pytest.raises(RuntimeError):
        log.log("train", 2, train_rec(2, 1.0, 1e-3))
    assert read_scalars(tmp_path)["train/loss"] == [(1, 2.0)]


@needs_tensorboard
def test_tensorboard_resume_appends_and_hides_points_after_checkpoint(tmp_path):
    # First session: logs to step 30, but its checkpoint is at step 20 (then it died).
    with make_logger("tensorboard", tmp_path, start_step=0) as log:
        for step in (10, 20, 30):
            log.log("train", step, train_rec(step, float(step), 1e-3))
    # Resumed from step 20: a second event file in the same folder, step 30 logged anew.
    with make_logger("tensorboard", tmp_path, start_step=20) as log:
        for step in (30, 40):
            log.log("train", step, train_rec(step, step + 0.5, 1e-3))
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    got = read_scalars(tmp_path)["train/loss"]
    assert got == [(10, 10.0), (20, 20.0), (30, 30.5), (40, 40.5)]


# -- wandb (only where installed; offline, no network) -----------------------------------------
@pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed")
def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    log_a = make_logger("wandb", run_a, run_name="a", config={"lr": 1e-3, "seed": 0})
    log_b = make_logger("wandb", run_b, run_name="b", config={"lr": 2e-3, "seed": 1})
    try:
        assert log_a.run.id == run_id(run_a) and log_b.run.id == run_id(run_b)
        assert log_a.run.name == "a" and log_a.run.config["lr"] == 1e-3
        log_a.log("train", 10, train_rec(10, 1.0, 1e-3))
        log_a.log("eval", 10, eval_rec(10, 42.5))
        log_b.log("train", 10, train_rec(10, 3.0, 2e-3))
        log_a.log("train", 20, train_rec(20, 0.5, 5e-4))
        log_b.log("train", 20, train_rec(20, 2.0, 1e-3))
        # W&B commits a step's row (train and eval merged) when a later step begins
        assert log_a.run.summary["train/loss"] == 1.0
        assert log_a.run.summary["train/lr"] == 1e-3
        assert log_a.run.summary["eval/mean_delay_ms"] == 42.5
        assert not {"step", "epoch", "train/step", "train/epoch"} & set(log_a.run.summary.keys())
        assert log_b.run.summary["train/loss"] == 3.0
    finally:
        log_a.close()
        log_b.close()
    log_a.close()
    for run_dir in (run_a, run_b):
        assert list((run_dir / "wandb").glob(f"offline-run-*-{run_id(run_dir)}"))
