"""A benchmark script still runs, with its smallest options, on the CPU.

The numbers of a benchmark are measured on purpose, with the command its docs give; what CI
checks is that the command still works, so a refactor of the library cannot leave a documented
benchmark broken (as plan_latency.py was once, by a constant that changed type). Today:
plan_latency.py, the real-time guide's benchmark, and train_speed.py's stacked modes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name: str, *args: str, timeout: int = 600, ok: bool = True) -> str:
    """The script's stdout (with ``ok=False``: its stderr, and it must have failed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert (run.returncode == 0) == ok, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout if ok else run.stderr


@pytest.mark.parametrize("guidance", ["classifier", "cfg"])
def test_plan_latency_prints_its_tables(guidance):
    """Both guidance kinds (the header names each one's default scale), the batched table and
    one agent on one core, eager and through ONNX Runtime, and another preset's row there; for
    classifier-free guidance also the whole plan as one graph in OpenVINO, over two rounds with
    their summary (the speed-up of each setting over the first)."""
    cpu = ["warm", "warm+onnx", "demo:warm"]
    more = []
    if guidance == "cfg":
        cpu.append("warm+openvino")
        more = ["--cpu-rounds", "2"]
    out = run_benchmark(
        "plan_latency.py", "--preset", "demo", "--set", f"guidance={guidance}",
        "--device", "cpu", "--agents", "1,3", "--settings", "cold10,warm", "--quick",
        "--cpu1", "--cpu-settings", ",".join(cpu), *more,
    )  # fmt: skip
    scale = "classifier at 0.1" if guidance == "classifier" else "classifier-free at 1.2"
    assert f"guidance: {scale}" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ")]
    for setting in ("cold10", *cpu):
        assert any(ln.startswith(f"| {setting} |") for ln in rows), out
    if guidance == "cfg":
        assert "Over the 2 rounds" in out
        # the summary's first row is the first setting against itself
        assert any(ln.startswith("| warm | ") and "| 1.00x (1.00-1.00) |" in ln for ln in rows)


def test_plan_latency_refuses_an_unknown_preset_before_timing():
    """A --cpu-settings entry PRESET:SETTING with an unknown preset is refused with the list."""
    err = run_benchmark(
        "plan_latency.py", "--preset", "demo", "--device", "cpu", "--settings", "cold10",
        "--cpu1", "--cpu-settings", "warm,nope:warm", ok=False,
    )  # fmt: skip
    assert "--cpu-settings: 'nope' is not one of" in err and "fast-steer" in err


def test_train_speed_prints_stacked_rows_with_either_norm():
    """The training benchmark's stacked modes, with the group norm of each kind and the flat
    update, on the CPU."""
    out = run_benchmark(
        "train_speed.py", "--preset", "demo", "--device", "cpu", "--quick",
        "--modes", "eager,stacked2+native,stacked2+rows,stacked2+rows+flat",
    )  # fmt: skip
    rows = [ln for ln in out.splitlines() if ln.startswith("| ")]
    for mode in ("eager", "stacked2+native", "stacked2+rows", "stacked2+rows+flat"):
        assert any(ln.startswith(f"| {mode} | ") for ln in rows), out


@pytest.mark.parametrize(
    "mode, said",
    [
        ("captured+rows", "rows (stacked modes only)"),
        ("stacked2+native+rows", "one norm at a time"),
    ],
)
def test_train_speed_refuses_a_norm_where_it_means_nothing(mode, said):
    err = run_benchmark("train_speed.py", "--device", "cpu", "--modes", mode, ok=False)
    assert "--modes: unknown or repeated switch" in err and said in err
