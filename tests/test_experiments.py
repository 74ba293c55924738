"""The adaptive study's GPU script (experiments/adaptive_gpu.sh), on a CPU, tiny."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_reproduce import gpu_script_env

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
    come back under OUT, and the option reached every run's configuration."""
    env = gpu_script_env(tmp_path, "STUDY_WORK", **TINY)
    cmd = ["bash", str(ROOT / "experiments" / "adaptive_gpu.sh"), "load100", "invnow", "demo"]
    run = subprocess.run(
        [*cmd, "inv_mf=now"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    res = json.loads((out / "eval-load100-invnow.json").read_text())
    labels = {r["policy"] for r in res["rows"]}
    assert labels == {f"invnow seed {s} [{c}]" for s in (0, 1, 2) for c in ("best", "last")}
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
