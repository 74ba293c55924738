"""The adaptive study's GPU script (experiments/adaptive_gpu.sh), on a CPU, tiny."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_reproduce import gpu_script_env

from macdmp.data.info import dataset_info
from macdmp.eval.report import training_seed_table

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "SIZE": "--trajectories 12 --frames 100",
    "STEPS": "20",
    "EVAL_EVERY": "20",
    "EVAL_FRAMES": "20",
    "FRAMES": "20",
}


@pytest.mark.slow
def test_adaptive_gpu_script_trains_three_seeds_then_tests_both_checkpoints(tmp_path):
    """One variant (the demo preset with inv_mf=now) on `load100`: three seeds trained with
    their validation, then each seed's selected and last checkpoints tested; the small files
    come back under OUT, and the option reached every run's configuration. The data is
    collected another way (COLLECT: two of the family's scenarios, another mix)."""
    env = gpu_script_env(tmp_path, "STUDY_WORK", **TINY)
    cmd = ["bash", str(ROOT / "experiments" / "adaptive_gpu.sh"), "load100", "invnow", "demo"]
    env["ACTING"] = "steps=2 solver=dpm1,steps=3"  # acting settings on the selected checkpoints
    env["COLLECT"] = "--scenarios n8-2to6-load100,n9-4to5-load100 --policies maxweight,proportional"
    run = subprocess.run(
        [*cmd, "inv_mf=now"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    res = json.loads((out / "eval-load100-invnow.json").read_text())
    labels = {r["policy"] for r in res["rows"]}
    assert labels == {
        f"{name} seed {s} [{c}]"
        for s in (0, 1, 2)
        for name, c in (
            ("invnow", "best"), ("invnow", "last"),
            ("invnow+steps=2", "best"), ("invnow+solver=dpm1+steps=3", "best"),
        )
    }  # fmt: skip
    seeds_table = training_seed_table(res["rows"])  # what `macdmp report` averages
    assert "| invnow [best] | ideal | 0, 1, 2 |" in seeds_table
    assert "| invnow [last] | limited | 0, 1, 2 |" in seeds_table
    assert set(res["scenarios"]) == {
        "n8-2to6-load100", "n8-4to4-load100", "n9-2to7-load100", "n9-4to5-load100"
    }  # fmt: skip
    with tarfile.open(out / "train-load100-invnow.tgz") as tar:
        names = set(tar.getnames())
        saved = json.load(tar.extractfile("load100-invnow/seed-1/config.json"))  # type: ignore[arg-type]
    assert {f"load100-invnow/seed-{s}/evals.jsonl" for s in (0, 1, 2)} <= names
    assert saved["config"]["inv_mf"] == "now" and saved["config"]["max_steps"] == 20
    (data,) = (tmp_path / "w").glob("load100-*.h5")  # named by its recipe, not the family's
    info = dataset_info(data)
    assert set(info["scenarios"]) == {"n8-2to6-load100", "n9-4to5-load100"}
    assert info["behaviour_policy"]["policies"] == ["maxweight", "proportional"]
    # TEST_ONLY: the same runs tested again with another acting setting, nothing trained
    losses = (tmp_path / "w" / "load100-invnow" / "seed-0" / "losses.jsonl").read_bytes()
    # on more held-out networks than the first test (TEST_SEEDS)
    env["TEST_ONLY"], env["ACTING"], env["TEST_SEEDS"] = "1", "steps=4", "4"
    run = subprocess.run(
        [*cmd, "inv_mf=now"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads((out / "eval-load100-invnow-testonly.json").read_text())
    assert "invnow+steps=4 seed 2 [best]" in {r["policy"] for r in res["rows"]}
    assert (
        len(res["seeds"]) == 4
        and len(json.loads((out / "eval-load100-invnow.json").read_text())["seeds"]) == 3
    )
    assert (tmp_path / "w" / "load100-invnow" / "seed-0" / "losses.jsonl").read_bytes() == losses


def _script(name: str):  # type: ignore[no-untyped-def]
    """An experiments/ script as a module (experiments/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_return_quantiles_lists_the_targets_a_plan_can_ask_for(tmp_path, capsys):
    """experiments/return_quantiles.py: the horizon returns' quantiles for a training setting;
    its 90% quantile is the run's default target (the training statistics' `ret_best`)."""
    from macdmp.data.collect import CollectSettings, collect
    from macdmp.data.windows import open_windows

    path = tmp_path / "d.h5"
    settings = CollectSettings(
        out=str(path), scenarios=("n8-2to6-load100",), trajectories=3, frames=60, seed=3
    )
    collect(settings, progress=False)
    rq = _script("return_quantiles")
    argv = [str(path), "--horizon", "8", "--reward", "own-backlog", "--quantiles", "0.9,1"]
    assert rq.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    best = open_windows(path, 8, 0.99, "own-backlog").stats["ret_best"]
    assert [r[0] for r in rows] == ["0.9", "1"]
    assert float(rows[0][1]) == pytest.approx(float(best), abs=0.05)  # printed to 0.1
    assert float(rows[1][1]) >= float(rows[0][1])
    for option, value, field in (
        ("--quantiles", "0.5,2", "--quantiles"), ("--horizon", "0", "horizon"),
        ("--gamma", "1.5", "gamma"),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            rq.main([str(path), option, value])
        assert field in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit):
        rq.main([str(tmp_path / "missing.h5")])
    assert "missing.h5" in capsys.readouterr().err


def test_history_r2_fits_each_information_set_on_held_out_trajectories(tmp_path, capsys):
    """experiments/history_r2.py: one row per information set, its inputs the pin's frames in
    order (o_t, m_t, then o and m of each frame before), an R^2 per horizon; bad options named."""
    import numpy as np

    from macdmp.data.collect import CollectSettings, collect

    paths = [tmp_path / "train.h5", tmp_path / "test.h5"]
    for path, seed in zip(paths, (3, 4), strict=True):
        settings = CollectSettings(
            out=str(path), scenarios=("n8-2to6-load100",), trajectories=3, frames=60, seed=seed
        )
        collect(settings, progress=False)
    hr = _script("history_r2")
    argv = [str(p) for p in paths] + ["--history", "2", "--ahead", "3,1", "--steps", "5"]
    assert hr.main(argv + ["--n", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("|")[3:5] == [" R^2, t+1 ", " R^2, t+3 "]  # sorted
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[3:]]
    assert [(r[0], r[1]) for r in rows] == [("own", "4"), ("own+mf", "8"), ("own+mf+h2", "24")]
    assert all(float(v) <= 1.0 for r in rows for v in r[2:])
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    f = hr.features(x, -x, now=2, history=2, mf=True)
    assert f.shape == (2, 24)
    want = [x[:, 2], -x[:, 2], x[:, 1], -x[:, 1], x[:, 0], -x[:, 0]]
    assert np.array_equal(f, np.concatenate(want, axis=1))
    assert np.array_equal(hr.features(x, -x, now=2, history=0, mf=False), x[:, 2])
    # the targets are the backlog's change (gen + tran queue), not its level
    q = x[:, :, 0] + x[:, :, 2]
    change = hr.backlog_change(x, now=1, ahead=[1, 2])
    assert np.array_equal(change, np.stack([q[:, 2] - q[:, 1], q[:, 3] - q[:, 1]], axis=1))
    for option, value in (("--history", "0"), ("--ahead", "one"), ("--steps", "0")):
        with pytest.raises(SystemExit):
            hr.main([str(p) for p in paths] + [option, value])
        assert option in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit):
        hr.main([str(tmp_path / "missing.h5"), str(paths[1])])
    assert "missing.h5" in capsys.readouterr().err


def test_adaptive_gpu_script_test_only_stops_at_once_without_the_runs(tmp_path):
    """TEST_ONLY on a machine without the trained runs (a fresh device machine) stops with
    exit 3 before collecting or training anything, rather than starting the variant again."""
    env = gpu_script_env(tmp_path, "STUDY_WORK", **TINY)
    env["TEST_ONLY"] = "1"
    cmd = ["bash", str(ROOT / "experiments" / "adaptive_gpu.sh"), "load100", "invnow", "demo"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "TEST_ONLY: no trained run" in run.stderr and "seed-0" in run.stderr
    work = tmp_path / "w"
    assert not work.exists() or not any(work.iterdir())  # no dataset, no run folder
    env["TEST_ONLY"] = "yes"
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "TEST_ONLY: 'yes'; allowed: 0 or 1" in run.stderr
    env["TEST_ONLY"], env["TEST_SEEDS"] = "1", "0"
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "TEST_SEEDS: '0'; allowed: a whole number >= 1" in run.stderr
