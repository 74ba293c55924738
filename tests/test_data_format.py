"""Dataset collection, file format and validation (`macdmp collect`, `macdmp dataset`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from macdmp.app.main import main
from macdmp.data.collect import CollectSettings, collect, trajectory_seed
from macdmp.data.format import (
    FORMAT_VERSION,
    TOTAL_FIELDS,
    DatasetError,
    schema_fields,
    validate,
)
from macdmp.sim.config import PRESETS
from macdmp.sim.core import BatchedNetworks

SCEN = ["n8-2to6", "n9-4to5"]


def small(out: Path, **kw) -> CollectSettings:
    base = dict(out=str(out), scenarios=SCEN, trajectories=5, frames=40, seed=3, batch_size=2)
    base.update(kw)
    return CollectSettings(**base)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.h5"
    collect(small(path), progress=False)
    return path


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.h5"
    shutil.copy(src, dst)
    return dst


def test_round_trip_replays_in_the_simulator(dataset):
    """Stored actions replayed on the stored seeds give back the stored observations/rewards."""
    header = validate(dataset)
    assert header.format_version == FORMAT_VERSION
    assert [s.n_trajectories for s in header.scenarios.values()] == [3, 2]
    with h5py.File(dataset) as f:
        assert f.attrs["command"].startswith("macdmp collect --out")
        k = 0
        for name in SCEN:
            g = f["scenarios"][name]
            t = g.attrs["n_trajectories"]
            seeds = g["seeds"][:]
            assert seeds.tolist() == [trajectory_seed(3, k + j) for j in range(t)]
            k += t
            obs, act, rew = g["obs"][:], g["actions"][:], g["rewards"][:]
            assert obs.shape == (t, 41, PRESETS[name].n_nodes, 4) and obs.dtype == np.uint16
            assert np.all(obs[:, 0] == 0)
            sim = BatchedNetworks(PRESETS[name], seeds.tolist())
            assert np.array_equal(sim.adjacency, g["adjacency"][:])
            assert np.array_equal(sim.is_high, g["is_high"][:])
            assert np.allclose(sim.networks[0].positions_m, g["positions_m"][0])
            for step in range(40):
                res = sim.step(act[:, step].astype(np.float64))
                assert np.array_equal(res.obs, obs[:, step + 1].astype(np.float32))
                assert np.allclose(res.reward, rew[:, step], atol=1e-4)
            tot = g["totals"][:]
            col = TOTAL_FIELDS.index("generated")
            assert np.array_equal(tot[:, col], sim.totals[:, 0])
            assert np.array_equal(tot[:, TOTAL_FIELDS.index("queued_end")], sim.queued())


def test_collection_is_reproducible_and_noise_changes_actions(dataset, tmp_path):
    again = tmp_path / "again.h5"
    collect(small(again), progress=False)
    other = tmp_path / "quiet.h5"
    collect(small(other, behaviour_noise=0.0), progress=False)
    with h5py.File(dataset) as a, h5py.File(again) as b, h5py.File(other) as c:
        for key in schema_fields(FORMAT_VERSION):  # a static scenario: no adjacency_t
            assert np.array_equal(a["scenarios/n8-2to6"][key][:], b["scenarios/n8-2to6"][key][:])
        act0 = c["scenarios/n8-2to6/actions"][:]
        # no noise: the carried split, constant over frames and summing to M x L
        assert np.allclose(act0, act0[:, :1])
        assert np.allclose(act0.sum(axis=2), 40, atol=1e-3)
        assert a["scenarios/n8-2to6/actions"][:].std(axis=1).min() > 0
        assert '"sigma": 0.0' in c.attrs["behaviour_policy"]


def test_info_reports_qos(dataset, capsys):
    assert main(["dataset", "info", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "n8-2to6" in out and "thr Mbps" in out and "tran_max" in out


@pytest.mark.parametrize(
    "damage, message",
    [
        ("version", "format version 99 is not supported"),
        ("truncate", "truncated"),
        ("not_hdf5", "not an HDF5 file"),
        ("edit_value", "content hash mismatch"),
        ("drop_dataset", "rewards: dataset is missing"),
        ("wrong_nodes", "n_nodes 7 but its config has 8 nodes"),
        ("flip_bytes", None),
    ],
)
def test_damaged_files_give_clear_errors(dataset, tmp_path, damage, message, capsys):
    path = copy(dataset, tmp_path)
    if damage == "version":
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 99
    elif damage == "truncate":
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif damage == "not_hdf5":
        path.write_text("hello")
    elif damage == "edit_value":
        with h5py.File(path, "r+") as f:
            f["scenarios/n9-4to5/rewards"][1, 7, 2] = -3.0
    elif damage == "drop_dataset":
        with h5py.File(path, "r+") as f:
            del f["scenarios/n8-2to6/rewards"]
    elif damage == "wrong_nodes":
        with h5py.File(path, "r+") as f:
            f["scenarios/n8-2to6"].attrs["n_nodes"] = 7
    elif damage == "flip_bytes":
        data = bytearray(path.read_bytes())
        rng = np.random.default_rng(0)
        for pos in rng.integers(len(data) // 4, len(data), size=64):
            data[pos] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=message):
        validate(path)
    # the command prints one clean line and exits 2, no traceback
    assert main(["dataset", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("macdmp dataset: error:") and "Traceback" not in err
    assert err.count("\n") == 1


def test_refuses_overwrite_and_bad_seed(dataset, tmp_path):
    with pytest.raises(ValueError, match="--force"):
        collect(small(dataset), progress=False)
    with pytest.raises(ValueError, match="--seed"):
        collect(small(tmp_path / "x.h5", seed=2**15), progress=False)
    with pytest.raises(ValueError, match="--behaviour-noise"):
        collect(small(tmp_path / "x.h5", behaviour_noise=-1.0), progress=False)
    with pytest.raises(ValueError, match="unknown scenario"):
        collect(small(tmp_path / "x.h5", scenarios=["n8-2to6", "nope"]), progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_exception_midway_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "broken.h5"
    real_step = BatchedNetworks.step
    calls = {"n": 0}

    def failing_step(self, demands):
        calls["n"] += 1
        if calls["n"] == 60:  # in the second batch, after one was written
            raise RuntimeError("injected failure")
        return real_step(self, demands)

    monkeypatch.setattr(BatchedNetworks, "step", failing_step)
    with pytest.raises(RuntimeError, match="injected"):
        collect(small(out), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_overwrite(dataset, tmp_path, monkeypatch):
    path = copy(dataset, tmp_path)
    before = path.read_bytes()

    def boom(self, demands):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(BatchedNetworks, "step", boom)
    with pytest.raises(RuntimeError):
        collect(small(path), force=True, progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["copy.h5"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_collection_leaves_no_file_under_final_name(tmp_path, sig):
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "macdmp.app", "collect", "--quiet",
           "--scenarios", "n9-2to7", "--trajectories", "8"]  # fmt: skip
    # The same collection, short, first: it compiles the frame kernel of this batch shape into
    # numba's cache. On a fresh clone that compilation takes long enough to delay the signal
    # below past the timeout (the handler runs only once the compiler returns).
    warm = tmp_path.parent / f"{tmp_path.name}-warm.h5"
    subprocess.run([*cmd, "--frames", "5", "--out", str(warm)], check=True, capture_output=True)
    warm.unlink()
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps
    # an inherited SIG_IGN: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(
        [*cmd, "--frames", "200000", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.glob(".killed.h5.partial-*")):
        time.sleep(0.05)
    assert any(tmp_path.glob(".killed.h5.partial-*")), "collection never started writing"
    time.sleep(0.3)
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    assert not out.exists()
    if sig != signal.SIGKILL:  # Ctrl-C and SIGTERM alike: a clean stop, no temporary file left
        assert proc.returncode == 130, proc.stderr.read()
        assert list(tmp_path.iterdir()) == []


def test_collect_makes_missing_output_folders(tmp_path):
    out = tmp_path / "new" / "folder" / "d.h5"
    collect(small(out), progress=False)
    assert out.is_file()
