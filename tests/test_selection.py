"""Model selection: the trainer chooses a run's best checkpoint on validation seeds only, a
range disjoint from the training and the test seeds; the selected checkpoint is a policy
(``checkpoint=best``); filtered behaviour cloning (%BC) clones the best trajectories only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import macdmp.methods.trainer as trainer_module
from macdmp.app.main import main
from macdmp.data.windows import open_windows
from macdmp.methods import load_run, read_evals
from macdmp.methods.base import make_config
from macdmp.methods.checkpoint import BEST_NAME, read_checkpoint
from macdmp.methods.policy import load_policy
from macdmp.methods.trainer import Trainer
from macdmp.policies import PolicyError
from macdmp.sim.seeds import (
    EVAL_SEED_BASE,
    TEST_SEEDS,
    TRAIN_SEED_LIMIT,
    VALIDATION_SEED_BASE,
    eval_seeds,
    seed_range,
    validation_seeds,
)


def test_the_three_seed_ranges_never_overlap():
    assert TRAIN_SEED_LIMIT <= EVAL_SEED_BASE < VALIDATION_SEED_BASE
    test = eval_seeds(TEST_SEEDS)  # the whole test range
    assert test[0] == EVAL_SEED_BASE and test[-1] == VALIDATION_SEED_BASE - 1
    val = validation_seeds(5, offset=7)
    assert min(val) >= VALIDATION_SEED_BASE and not set(val) & set(test)
    assert {seed_range(s) for s in test[:3] + test[-3:]} == {"test"}
    assert {seed_range(s) for s in val} == {"validation"}
    assert seed_range(TRAIN_SEED_LIMIT - 1) == "training"
    with pytest.raises(ValueError, match="validation range starts there"):
        eval_seeds(2, offset=TEST_SEEDS - 1)  # test seeds may not run into validation seeds


REAL_RUN_GROUPS = trainer_module.run_groups  # the spies below wrap it, never each other


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sel") / "d.h5"
    args = ["collect", "--out", str(path), "--trajectories", "4", "--frames", "120"]
    assert main([*args, "--scenarios", "n9-2to7", "--quiet"]) == 0
    return path


def _bc(dataset: Path, run: Path, monkeypatch, values=None, stop_after=None, **sets):
    """A BC run with in-loop evaluations every 20 steps; ``values``: the loss-aware delays the
    evaluations report, in order (the seeds they ran on are recorded)."""
    seen: list[list[int]] = []
    real = REAL_RUN_GROUPS

    def spy(groups, policy, frames):
        results = real(groups, policy, frames=frames)
        seen.append(sorted({s for _, seeds in groups for s in seeds}))
        if values is not None:
            v = values[len(seen) - 1]
            for r in results:  # the metric the rule reads, set per evaluation
                r.mean_delay_ms[:] = v
                r.loss_rate[:] = 0.0
        return results

    monkeypatch.setattr(trainer_module, "run_groups", spy)
    sizes = {"hidden": 16, "n_epochs": 1, "steps_per_epoch": 80, "log_every": 20}
    evals = {"ckpt_every": 40, "eval_every": 20, "eval_seeds": 2, "eval_frames": 10}
    cfg = make_config("bc", "demo", **sizes, **evals, **sets)
    data = open_windows(dataset, horizon=1, gamma=cfg.gamma)
    tr = Trainer("bc", cfg, data, run, "cpu")
    tr.run(progress=False, stop_after=stop_after)
    tr.close()
    return seen


def test_the_best_checkpoint_is_chosen_on_validation_seeds_only(dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = _bc(dataset, run, monkeypatch, values=[30.0, 10.0, 20.0, 15.0])
    assert len(seen) == 4
    for seeds in seen:  # every in-loop evaluation ran on validation networks
        assert seeds and all(seed_range(s) == "validation" for s in seeds)
    evals = read_evals(run)
    assert [round(r["loss_aware_delay_ms"], 6) for r in evals] == [30.0, 10.0, 20.0, 15.0]
    best = read_checkpoint(run / BEST_NAME)
    assert best["step"] == 40 and best["selected"]["seeds"] == "validation"
    assert best["selected"]["metric"] == "loss_aware_delay_ms"
    assert best["selected"]["value"] == pytest.approx(10.0)
    last = load_run(run)
    chosen = load_run(run, which="best")
    assert last.train_step == 80 and chosen.train_step == 40
    # the selected weights are the EMA weights at step 40, not the last ones
    assert not torch.equal(chosen.net[0].weight, last.net[0].weight)
    pol = load_policy(f"{run},checkpoint=best")
    assert pol.label == "BC [best]" and pol.describe()["checkpoint"] == "best"
    assert load_policy(str(run)).describe()["train_step"] == 80
    with pytest.raises(PolicyError, match="checkpoint: must be one of last, best"):
        load_policy(f"{run},checkpoint=first")


def test_a_resumed_run_keeps_its_best(dataset, tmp_path, monkeypatch):
    """Stopped after step 40 (its best so far at step 20) and resumed, the run chooses the
    same checkpoint as uninterrupted."""
    run = tmp_path / "run"
    values = [10.0, 30.0, 20.0, 15.0]
    _bc(dataset, run, monkeypatch, values)
    alone = read_checkpoint(run / BEST_NAME)
    run2 = tmp_path / "run2"
    _bc(dataset, run2, monkeypatch, values[:2], stop_after=40)
    assert read_checkpoint(run2 / BEST_NAME)["step"] == 20
    _bc(dataset, run2, monkeypatch, values[2:])  # resumed at step 40, to the end
    again = read_checkpoint(run2 / BEST_NAME)
    assert again["step"] == alone["step"] == 20
    assert all(torch.equal(again["ema"][k], alone["ema"][k]) for k in alone["ema"])


def test_no_best_checkpoint_without_evaluations(dataset, tmp_path):
    cfg = make_config("bc", "demo", hidden=16, n_epochs=1, steps_per_epoch=20, log_every=10)
    tr = Trainer("bc", cfg, open_windows(dataset, horizon=1, gamma=cfg.gamma), tmp_path, "cpu")
    tr.run(progress=False)
    tr.close()
    assert not (tmp_path / BEST_NAME).exists()
    with pytest.raises(PolicyError, match="eval_every"):
        load_policy(f"{tmp_path},checkpoint=best")


def test_filtered_bc_clones_the_best_trajectories_only(dataset, tmp_path):
    data = open_windows(dataset, horizon=1, gamma=0.99)
    stats = data.stats
    batch = data.sample(4096, np.random.default_rng(0))
    whole = batch["rtg0"]
    assert np.mean(whole >= stats["rtg_start_best"]) == pytest.approx(0.1, abs=0.06)
    cfg = make_config("bc", "demo", hidden=16, filtered=True, n_epochs=1, steps_per_epoch=20)
    tr = Trainer("bc", cfg, data, tmp_path / "f", "cpu")
    assert "rtg0" in tr.method.batch_keys(cfg)
    b = {k: torch.as_tensor(v) for k, v in data.sample(512, np.random.default_rng(1)).items()}
    keep = b["rtg0"] >= float(stats["rtg_start_best"])
    full = tr.method.loss(b)["loss"]
    # the filtered loss is the mean squared error of the kept windows alone
    pred = tr.method.net((b["x"][:, 0] - tr.method.obs_mean) / tr.method.obs_std).squeeze(-1)
    err = (pred - (b["act"][:, 0] - tr.method.act_mean) / tr.method.act_std).pow(2)
    assert keep.any() and not keep.all()
    torch.testing.assert_close(full, err[keep].mean())
    tr.run(progress=False)
    tr.close()
    assert load_policy(str(tmp_path / "f")).label == "%BC"
