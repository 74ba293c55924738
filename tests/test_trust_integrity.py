"""Trust (issue 30, part A): loading a run folder never runs code from it, damaged or edited
checkpoints and datasets are refused by name on every load, a resume keeps its dataset, and one
writer at a time holds a run folder or a dataset being collected."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from macdmp.app.main import main
from macdmp.common.locking import OutputLockedError, lock_output, lock_path_for_file
from macdmp.data.format import DatasetError, validate
from macdmp.methods import load_run
from macdmp.methods.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointIntegrityError,
    read_checkpoint,
)
from macdmp.methods.policy import RunPolicy

BC_SETS = ["--set", "n_epochs=1", "steps_per_epoch=6", "log_every=3", "ckpt_every=3", "hidden=16"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


class RunsCode:
    """Unpickling this calls os.system: what a crafted checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "d.h5"
    args = ["collect", "--out", str(path), "--trajectories", "4", "--frames", "60"]
    assert main([*args, "--scenarios", "n8-2to6,n9-2to7", "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trust-run") / "run"
    args = ["train", "--method", "bc", "--data", str(dataset), "--out", str(out), "--quiet"]
    assert main([*args, *BC_SETS]) == 0
    return out


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


# -- 1. no code runs from a run folder ---------------------------------------------------------
def test_saved_checkpoint_is_plain_data_with_a_digest(run):
    path = run / CHECKPOINT_NAME
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    raw = torch.load(path, weights_only=True)  # torch's own safe loader, nothing allowed extra
    assert set(raw["digest"]) == {"sha256"} and len(raw["digest"]["sha256"]) == 64
    assert isinstance(raw["stats"]["obs_mean"], torch.Tensor)
    assert raw["data_path"].endswith("d.h5")
    ckpt = read_checkpoint(path)
    assert "digest" not in ckpt and isinstance(ckpt["stats"]["obs_mean"], np.ndarray)


def test_crafted_pickle_never_runs(run, dataset, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((run / "config.json").read_text())
    ckpt = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    ckpt["model"] = RunsCode(marker)
    torch.save(ckpt, evil / CHECKPOINT_NAME)
    # the library loaders
    for load in (lambda: load_run(evil), lambda: read_checkpoint(evil / CHECKPOINT_NAME)):
        with pytest.raises(CheckpointIntegrityError, match="is refused: unpickling it would call"):
            load()
    with pytest.raises(ValueError, match="posix.system|os.system|nt.system"):
        RunPolicy.from_spec(str(evil))
    # the commands that take a run folder
    assert main(["evaluate", "--policy", str(evil), "--seeds", "1", "--frames", "5"]) == 2
    _one_line_error(capsys, str(evil / CHECKPOINT_NAME), "is refused")
    assert main(["simulate", "--policy", str(evil), "--frames", "5"]) == 2
    _one_line_error(capsys, str(evil / CHECKPOINT_NAME), "is refused")
    args = ["train", "--method", "bc", "--data", str(dataset), "--out", str(evil), "--quiet"]
    assert main([*args, *BC_SETS]) == 2
    _one_line_error(capsys, str(evil / CHECKPOINT_NAME), "is refused")
    assert not marker.exists()
    # the same file, unpickled the old way, does run its code: the test is real
    torch.load(evil / CHECKPOINT_NAME, weights_only=False)
    assert marker.exists()


# -- 2. digests, checked on every load ---------------------------------------------------------
def test_flipped_checkpoint_is_refused_by_name(run, tmp_path, capsys):
    bad = _copy_run(run, tmp_path / "flipped")
    data = bytearray((bad / CHECKPOINT_NAME).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 256] = bytes(b ^ 0xFF for b in data[mid : mid + 256])
    (bad / CHECKPOINT_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="is damaged"):
        load_run(bad)
    assert main(["simulate", "--policy", str(bad), "--frames", "5"]) == 2
    _one_line_error(capsys, str(bad / CHECKPOINT_NAME), "is damaged")


def test_edited_checkpoint_with_valid_archive_fails_its_digest(run, tmp_path):
    """An edit that keeps the zip's CRC-32s right (the file re-saved) is caught by the digest."""
    bad = _copy_run(run, tmp_path / "edited")
    ckpt = torch.load(bad / CHECKPOINT_NAME, weights_only=True)
    key = next(iter(ckpt["ema"]))
    ckpt["ema"][key] = ckpt["ema"][key] + 1e-3
    torch.save(ckpt, bad / CHECKPOINT_NAME)
    with pytest.raises(CheckpointIntegrityError, match="does not match its SHA-256 digest"):
        load_run(bad)


def test_older_checkpoint_without_digest_still_loads(run, tmp_path):
    old = _copy_run(run, tmp_path / "old")
    ckpt = torch.load(old / CHECKPOINT_NAME, weights_only=True)
    del ckpt["digest"], ckpt["data_path"]
    ckpt["stats"] = {k: v.numpy() for k, v in ckpt["stats"].items()}  # as older files held
    torch.save(ckpt, old / CHECKPOINT_NAME)
    assert load_run(old).train_step == load_run(run).train_step


def _edit_actions(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:  # in place: HDF5 rewrites its chunk checksums
        for g in f["scenarios"].values():
            g["actions"][...] = g["actions"][...] * 3
    return dst


def test_dataset_edited_in_place_is_refused_by_info_train_and_quick_validate(
    dataset, run, tmp_path, capsys
):
    bad = _edit_actions(dataset, tmp_path / "x3.h5")
    assert main(["dataset", "info", str(bad)]) == 2
    _one_line_error(capsys, str(bad), "actions: content hash mismatch")
    out = tmp_path / "new-run"
    args = ["train", "--method", "bc", "--data", str(bad), "--out", str(out), "--quiet"]
    assert main([*args, *BC_SETS]) == 2
    _one_line_error(capsys, str(bad), "actions: content hash mismatch")
    # a resume onto an existing run is refused too
    resumed = _copy_run(run, tmp_path / "resume")
    args = ["train", "--method", "bc", "--data", str(bad), "--out", str(resumed), "--quiet"]
    assert main([*args, *BC_SETS]) == 2
    _one_line_error(capsys, str(bad), "content hash mismatch")
    with pytest.raises(DatasetError, match="actions: content hash mismatch"):
        validate(bad, content=False)
    assert main(["dataset", "validate", "--quick", str(bad)]) == 2
    capsys.readouterr()


def test_quick_validate_catches_a_corrupted_chunk(dataset, tmp_path, capsys):
    bad = tmp_path / "chunk.h5"
    shutil.copy(dataset, bad)
    with h5py.File(bad) as f:
        info = f["scenarios/n9-2to7/obs"].id.get_chunk_info(1)
    with open(bad, "r+b") as fh:  # bytes in the middle of one compressed data chunk
        fh.seek(info.byte_offset + info.size // 2)
        chunk = fh.read(8)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0x5A for b in chunk))
    assert main(["dataset", "validate", "--quick", str(dataset)]) == 0
    capsys.readouterr()
    assert main(["dataset", "validate", "--quick", str(bad)]) == 2
    _one_line_error(capsys, str(bad), "/scenarios/n9-2to7/obs")


def test_resume_refuses_another_dataset_naming_both(dataset, run, tmp_path, capsys):
    other = tmp_path / "other.h5"
    args = ["collect", "--out", str(other), "--trajectories", "4", "--frames", "60"]
    assert main([*args, "--scenarios", "n8-2to6,n9-2to7", "--seed", "1", "--quiet"]) == 0
    resumed = _copy_run(run, tmp_path / "resume")
    before = (resumed / CHECKPOINT_NAME).read_bytes()
    args = ["train", "--method", "bc", "--data", str(other), "--out", str(resumed), "--quiet"]
    assert main([*args, *BC_SETS]) == 2
    _one_line_error(capsys, "trained on another dataset", str(dataset), str(other))
    assert (resumed / CHECKPOINT_NAME).read_bytes() == before


# -- 3. one writer per output ------------------------------------------------------------------
def test_output_lock_is_reentrant_in_process_and_released(tmp_path):
    path = tmp_path / ".lock"
    a = lock_output(path, "x")
    b = lock_output(path, "x")  # the same process: counted
    a.release()
    assert path.exists()
    b.release()
    assert not path.exists()  # the last release removes the file
    with lock_output(path, "x"):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def _holder(lock_file: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from macdmp.common.locking import lock_output; "
        "lock_output(sys.argv[1], 'held'); print('locked', flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock_file)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_train_on_the_same_out_is_refused_at_once(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    code = "import sys; from macdmp.app.main import main; sys.exit(main(sys.argv[1:]))"
    cmd = ["train", "--method", "bc", "--data", str(dataset), "--out", str(out), "--quiet"]
    sets = ["--set", "n_epochs=1", "steps_per_epoch=1000000", "log_every=1000", "hidden=16"]
    first = subprocess.Popen([sys.executable, "-c", code, *cmd, *sets], env=env)
    try:
        deadline = time.monotonic() + 180
        while not (out / "config.json").exists() or not (out / ".lock").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        config = (out / "config.json").read_text()
        t0 = time.monotonic()
        assert main([*cmd, "--set", "n_epochs=1", "steps_per_epoch=5", "batch_size=16"]) == 2
        assert time.monotonic() - t0 < 60  # refused at once, not after waiting
        host = socket.gethostname()
        _one_line_error(capsys, f"run folder {out}", f"pid {first.pid} on host {host}")
        assert (out / "config.json").read_text() == config  # the second wrote nothing
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # a killed holder's lock is gone with it
    with lock_output(out / ".lock", "run folder"):
        pass


def test_collect_onto_a_file_being_written_is_refused(tmp_path, capsys):
    out = tmp_path / "d.h5"
    holder = _holder(lock_path_for_file(out))
    try:
        args = ["collect", "--out", str(out), "--trajectories", "2", "--frames", "20", "--quiet"]
        assert main([*args, "--scenarios", "n8-2to6"]) == 2
        _one_line_error(capsys, f"--out {out}", f"pid {holder.pid}")
        assert not out.exists()
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            lock_output(lock_path_for_file(out), "x")
    finally:
        holder.kill()
        holder.wait()
    assert main([*args, "--scenarios", "n8-2to6"]) == 0
    assert not lock_path_for_file(out).exists()


def test_a_plan_naming_one_folder_twice_is_refused(dataset, tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    out = tmp_path / "same"
    plan.write_text(
        f'data = "{dataset}"\n[[run]]\nout = "{out}"\nmethod = "bc"\n'
        f'[[run]]\nout = "{out}/../same"\nmethod = "bc"\n'
    )
    assert main(["train", "--plan", str(plan), "--quiet"]) == 2
    _one_line_error(capsys, "two runs write the same folder", str(out))
    assert not out.exists()
