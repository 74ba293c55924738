"""Signals, faults, output paths and plan files (issue 30, items 4-7; docs/guide/trust.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from macdmp.app.main import main
from macdmp.common.outputs import (
    WriteError,
    check_output_dir,
    check_output_file,
    partial_path,
    read_json,
    read_jsonl,
    sweep_partials,
)
from macdmp.common.signals import Stopped, check_stop, stop_at_safe_points, stop_requests
from macdmp.data.collect import CollectSettings, collect

SRC = str(Path(__file__).resolve().parents[1] / "src")


def small(out: Path, **kw) -> CollectSettings:
    args = {"out": str(out), "scenarios": ["n9-2to7"], "trajectories": 2, "frames": 20}
    return CollectSettings(**{**args, **kw})


# -- 4. signals -------------------------------------------------------------------------------
# One fresh process imports the package once, then forks one collection per trial and sends it
# SIGTERM after a random delay (a forked child is a separate process with its own signal
# handling; forking spares each trial the ~3 s import). The delays are spread over the whole
# length of a collection, measured first, so that they also fall in its last moments: closing
# the HDF5 file, where the old handler's KeyboardInterrupt landed in h5py's weakref callbacks and
# was lost ("Exception ignored"; the collection then finished with exit 0). A trial whose child
# has already finished when its delay is over is drawn again.
TRIALS_DRIVER = textwrap.dedent(
    """
    import json, os, random, signal, sys, time, traceback
    from pathlib import Path
    from macdmp.app.main import build_parser, main

    build_parser()  # imports every stage once, here, not in each trial
    folder, n, args = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])

    def start(out, log, extra=()):
        pid = os.fork()
        if pid == 0:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            try:
                rc = main([*args, *extra, "--out", str(out)])
            except BaseException:
                traceback.print_exc()
                rc = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        return pid

    def wait(pid):
        deadline = time.time() + 60
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hung"

    def running(pid):  # not exited yet (an exited child not yet waited for is a zombie)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    # numba's cache on disk is warmed in a child, so that this process never runs the kernel
    # (OpenMP is not fork-safe once used) and each trial loads it afresh, as a new command does
    if wait(start(folder / "warm.h5", folder / "warm.log", ["--frames", "5"])) != 0:
        sys.exit("warm-up collection failed: " + (folder / "warm.log").read_text())
    t0 = time.perf_counter()
    if wait(start(folder / "timed.h5", folder / "timed.log")) != 0:
        sys.exit("timed collection failed: " + (folder / "timed.log").read_text())
    length = time.perf_counter() - t0
    rng = random.Random(int(os.environ.get("TRIAL_SEED", "20261202")))
    trials, redrawn = [], 0
    while len(trials) < n and redrawn < 3 * n:
        work = folder / f"trial-{len(trials)}"
        work.mkdir(exist_ok=True)
        log = folder / f"trial-{len(trials)}.log"
        delay = length * rng.random() ** 0.5  # anywhere, the last moments more often
        pid = start(work / "d.h5", log)
        time.sleep(delay)
        writing = any(work.iterdir())
        if not running(pid):  # finished before its signal: this trial tests nothing
            wait(pid)
            for p in work.iterdir():
                p.unlink()
            redrawn += 1
            continue
        os.kill(pid, signal.SIGTERM)
        rc = wait(pid)
        trials.append({"delay": round(delay, 3), "writing": writing, "rc": rc,
                       "left": sorted(p.name for p in work.iterdir()),
                       "stderr": log.read_text()})
    print(json.dumps({"length_s": length, "redrawn": redrawn, "trials": trials}))
    """
)
# a collection of about a second here: 16 networks stepped together for 2,000 frames
TRIAL_COLLECTION = ["collect", "--quiet", "--scenarios", "n9-2to7", "--trajectories", "16",
                    "--frames", "2000"]  # fmt: skip


def run_trials(folder: Path, n: int, src: str = SRC) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    argv = [sys.executable, "-c", TRIALS_DRIVER, str(folder), str(n), json.dumps(TRIAL_COLLECTION)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_sigterm_stops_collect_in_every_one_of_20_trials(tmp_path):
    from macdmp.data.format import validate

    out = run_trials(tmp_path, 20)
    trials = out["trials"]
    assert len(trials) == 20, out  # at most 60 redrawn
    for k, t in enumerate(trials):
        # stopped: 130 as on Ctrl-C (-15 only if the signal came before collect() began)
        assert t["rc"] in (130, -signal.SIGTERM), t
        assert not [n for n in t["left"] if n.startswith(".")], t  # no partial file
        if t["left"]:  # stopped after the rename, the last instant: the file is whole
            assert t["left"] == ["d.h5"] and t["rc"] == 130, t
            validate(tmp_path / f"trial-{k}" / "d.h5")
        assert "Exception ignored" not in t["stderr"] and "Traceback" not in t["stderr"], t
    # the moments fall where it matters: most trials are stopped while the file is written
    assert sum(t["writing"] and t["rc"] == 130 for t in trials) >= 10, trials


def test_signals_set_a_flag_and_raise_only_at_safe_points():
    before = signal.getsignal(signal.SIGTERM)  # another test's library may have set its own
    with pytest.raises(Stopped):  # a stop caught inside the block is raised again on leaving
        with stop_at_safe_points() as flag:
            check_stop()  # nothing pending: a no-op
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, and raises nothing
            assert flag and flag.signum == signal.SIGTERM
            with pytest.raises(Stopped) as exc:
                check_stop()
            assert exc.value.signum == signal.SIGTERM
            assert isinstance(exc.value, KeyboardInterrupt)
    # handlers are put back
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_polling_block_keeps_control_and_no_signal_is_lost():
    # inside the trainer's kind of block, the safe points of code it calls do not raise; the
    # flag is shared with the outer block
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Stopped):
        with stop_at_safe_points():
            with stop_requests() as inner:
                os.kill(os.getpid(), signal.SIGINT)
                check_stop()  # the polling block decides
                assert inner.signum == signal.SIGINT
            raise AssertionError("unreachable: leaving the polling block raises Stopped")
    # a signal after the last safe point is raised when the block is left
    with pytest.raises(Stopped):
        with stop_at_safe_points():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) is before


def test_collect_stops_at_a_safe_point_and_removes_its_partial_file(tmp_path, monkeypatch):
    from macdmp.sim.core import BatchedNetworks

    step = BatchedNetworks.step
    calls = [0]

    def signalling_step(self, demands):
        calls[0] += 1
        if calls[0] == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, demands)

    monkeypatch.setattr(BatchedNetworks, "step", signalling_step)
    with pytest.raises(Stopped):
        collect(small(tmp_path / "d.h5"), progress=False)
    assert calls[0] == 7  # stopped at the next frame
    assert list(tmp_path.iterdir()) == []


# -- 5. disk full, partial files ---------------------------------------------------------------
def test_collect_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, capsys
):
    from macdmp.data import format as fmt

    def full(self, name, arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt.DatasetWriter, "write", full)
    out = tmp_path / "d.h5"
    with pytest.raises(WriteError, match=r"d\.h5: cannot write: disk full"):
        collect(small(out), progress=False)
    assert list(tmp_path.iterdir()) == []
    args = json.loads(os.environ.get("TRIAL_ARGS", "null")) or [
        "collect",
        "--quiet",
        "--scenarios",
        "n9-2to7",
        "--trajectories",
        "2",
    ]
    assert main([*args, "--frames", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: cannot write: disk full" in err, err
    assert list(tmp_path.iterdir()) == []


def test_hdf5_disk_errors_are_recognised():
    from macdmp.common.outputs import is_disk_error, write_error

    # as h5py raises it, errno only in the text
    exc = OSError("Can't write data (file write failed: errno = 28, error message = 'No space')")
    assert is_disk_error(exc)
    assert "disk full" in str(write_error(exc, "x.h5"))
    assert not is_disk_error(OSError("unable to open file"))


def test_checkpoint_on_a_full_disk_names_it_not_the_zip_writer(tmp_path, monkeypatch):
    import macdmp.methods.checkpoint as ck

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "open", Full, raising=False)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(WriteError) as exc:
        ck.save_atomic({"step": 1}, path)
    assert str(exc.value).startswith(f"{path}: cannot write: disk full")
    assert "unexpected pos" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_partial_files_of_dead_processes_are_swept_by_the_next_writer(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = partial_path(tmp_path / "d.h5")
    host = mine.name.rsplit("@", 1)[1]
    stale = tmp_path / f".d.h5.partial-{dead.pid}@{host}"
    old_style = tmp_path / f".e.h5.partial-{dead.pid}"  # before host names
    alive = tmp_path / f".d.h5.partial-{os.getppid()}@{host}"
    elsewhere = tmp_path / f".d.h5.partial-{dead.pid}@another-host"
    other = tmp_path / ".notes.partial-x"
    for p in (stale, old_style, alive, elsewhere, other):
        p.write_bytes(b"x" * 100)
    collect(small(tmp_path / "d.h5"), progress=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["d.h5", alive.name, elsewhere.name, other.name])
    assert sweep_partials(tmp_path) == []


def test_sigkilled_collection_leaves_a_partial_file_that_the_next_run_removes(tmp_path):
    out = tmp_path / "d.h5"
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "macdmp.app", "collect", "--quiet", "--scenarios", "n9-2to7",
           "--trajectories", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen([*cmd, "--frames", "1000000"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        if any(tmp_path.glob(".d.h5.partial-*")):
            break
        proc.poll()
        assert proc.returncode is None, "collection ended before it was killed"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(list(tmp_path.glob(".d.h5.partial-*"))) == 1  # what SIGKILL cannot clean
    collect(small(out), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


# -- 6. output paths ---------------------------------------------------------------------------
def test_output_paths_are_refused_by_option_before_any_work(tmp_path, capsys, monkeypatch):
    from macdmp.sim.core import BatchedNetworks

    def no_work(*a, **k):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(BatchedNetworks, "__init__", no_work)
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    folder = tmp_path / "folder"
    folder.mkdir()
    ev = ["evaluate", "--policy", "equal", "--scenarios", "n9-2to7", "--seeds", "1"]
    cases = [
        ([*ev, "--json", str(existing)], f"--json: {existing} exists; pass --force"),
        ([*ev, "--json", "/dev/null", "--force"], "--json: /dev/null is a character device"),
        ([*ev, "--json", str(folder)], f"--json: {folder} is a folder"),
        ([*ev, "--plots", str(existing)], f"--plots: {existing} exists and is not a folder"),
        (["sim-study", "--out", str(existing)], f"--out: {existing} exists; pass --force"),
        (["sim-study", "--out", "/dev/null", "--force"], "--out: /dev/null is a character"),
        (["train", "--data", "x.h5", "--out", str(existing)], f"--out: {existing} exists and"),
        (["report", "--json", str(existing), "--out", str(existing)], "--out: "),
        (["collect", "--force", "--out", str(folder)], f"--out: {folder} is a folder"),
        (["collect", "--force", "--out", "/dev/null"], "--out: /dev/null is a character"),
        (["collect", "--out", str(existing / "d.h5")], f"--out: {existing} is a file, not"),
        (["demo", "--out", str(existing)], f"--out: {existing} exists and is not a folder"),
        (["simulate", "--plot", str(folder)], f"--plot: {folder} is a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert Path("/dev/null").is_char_device()
    assert existing.read_text() == "{}"


def test_an_unwritable_folder_is_found_before_the_work(tmp_path, capsys, monkeypatch):
    import macdmp.common.outputs as outputs
    from macdmp.sim.core import BatchedNetworks

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(BatchedNetworks, "__init__", no_work)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    # as root, a mode of 0o555 does not stop writes: stand in for a read-only folder
    monkeypatch.setattr(
        outputs.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode)
    )
    for argv, option in [
        (["collect", "--out", str(ro / "d.h5")], "--out"),
        (["evaluate", "--policy", "equal", "--json", str(ro / "new" / "r.json")], "--json"),
        (["sim-study", "--out", str(ro / "s.md")], "--out"),
        (["train", "--data", "x.h5", "--out", str(ro / "run")], "--out"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{option}: cannot write in folder {ro}" in err, err


def test_evaluate_json_with_force_replaces_the_file_atomically(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("old")
    argv = ["evaluate", "--policy", "equal", "--scenarios", "n9-2to7", "--seeds", "1",
            "--frames", "5", "--rf", "ideal", "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 2 and out.read_text() == "old"
    assert main([*argv, "--force"]) == 0
    assert json.loads(out.read_text())["frames"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    capsys.readouterr()


def test_check_output_helpers(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert check_output_file("--o", tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"
    assert check_output_file("--o", f, force=True) == f
    with pytest.raises(ValueError, match="--o: .* is a file, not a folder"):
        check_output_file("--o", f / "x.json")
    with pytest.raises(ValueError, match="--o: give a file name"):
        check_output_file("--o", "")
    assert check_output_dir("--d", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="--d: /dev/null exists and is not a folder"):
        check_output_dir("--d", "/dev/null")


# -- 7. plan files, parse errors, bounds -------------------------------------------------------
def _plan_specs(tmp_path: Path, text: str):
    import argparse

    from macdmp.app.train import _specs, register

    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--plan", str(plan), "--data", "x.h5"])
    return _specs(args)[1]


def test_plan_values_are_typed_as_set_reads_them(tmp_path):
    from macdmp.methods.config import build_config

    out = tmp_path / "r"
    specs = _plan_specs(tmp_path, f'[[run]]\nout = "{out}"\nno_mf = "false"\n')
    assert specs[0]["no_mf"] is False
    specs = _plan_specs(tmp_path, f'[[run]]\nout = "{out}"\nset = {{ use_mf = "false" }}\n')
    assert specs[0]["set"]["use_mf"] is False
    cfg = build_config("ma-cdmp", "demo", False, specs[0]["set"])
    assert cfg.use_mf is False
    specs = _plan_specs(
        tmp_path, f'[[run]]\nout = "{out}"\nno_mf = true\nset = {{ lr = 1, dim_mults = [1, 2] }}\n'
    )
    assert specs[0]["no_mf"] is True and specs[0]["set"] == {"lr": 1.0, "dim_mults": (1, 2)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('no_mf = "maybe"', "run 1: no_mf: expected true or false (got the string 'maybe')"),
        ("no_mf = 1", "run 1: no_mf: expected true or false (got int 1)"),
        ('steps = "ten"', "run 1: steps: expected an integer (got the string 'ten')"),
        ("steps = 1.5", "run 1: steps: expected an integer (got float 1.5)"),
        ("seed = true", "run 1: seed: expected an integer (got bool True)"),
        ("method = 3", "run 1: method: expected a string (got int 3)"),
        ('set = "x"', "run 1: set: expected a table"),
        ('set = { batch_size = "big" }', "run 1: set.batch_size: expected an integer"),
        ("set = { batch_size = 1.5 }", "run 1: set.batch_size: expected an integer"),
        ("set = { use_mf = 0 }", "run 1: set.use_mf: expected true or false (got int 0)"),
        ('set = { lr = "fast" }', "run 1: set.lr: expected a number"),
        ("set = { dim_mults = [1, 2.5] }", "run 1: set.dim_mults: expected a list of integers"),
        ("set = { nope = 1 }", "run 1: set.nope: unknown key for method ma-cdmp"),
    ],
)
def test_plan_values_of_the_wrong_type_are_named(tmp_path, capsys, body, message):
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[run]]\nout = "{tmp_path / "r"}"\n{body}\n')
    assert main(["train", "--plan", str(plan), "--data", "x.h5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(plan) in err and "not supported between" not in err, err
    assert not (tmp_path / "r").exists()


def test_a_plan_with_an_unknown_top_level_key_is_refused(tmp_path, capsys):
    plan = tmp_path / "plan.toml"
    plan.write_text(f'dta = "x.h5"\n[[run]]\nout = "{tmp_path / "r"}"\n')
    assert main(["train", "--plan", str(plan), "--data", "x.h5"]) == 2
    assert "unknown top-level key 'dta'" in capsys.readouterr().err


def test_damaged_json_files_are_named_with_the_line(tmp_path, capsys):
    from macdmp.methods.trainer import read_losses

    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.jsonl").write_text('{"step": 1}\n{"step": 2, "loss"\n')
    with pytest.raises(ValueError, match=r"losses\.jsonl: line 2: not valid JSON"):
        read_losses(run)
    bad = tmp_path / "r.json"
    bad.write_text('{\n  "rows": [\n    {"policy": "x",\n')
    with pytest.raises(ValueError, match=r"r\.json: line 4 column 1: not valid JSON"):
        read_json(bad)
    with pytest.raises(ValueError, match=r"^x: .*losses\.jsonl: line 2"):
        read_jsonl(run / "losses.jsonl", "x")
    assert main(["report", "--json", str(bad), "--out", str(tmp_path / "rep")]) == 2
    assert f"--json: {bad}: line 4" in capsys.readouterr().err
    from macdmp.eval.report import plot_training

    with pytest.raises(ValueError, match=r"^--losses: .*losses\.jsonl: line 2: not valid JSON"):
        plot_training([run / "losses.jsonl"], tmp_path / "training.png")


def test_a_damaged_reproduction_result_is_named(tmp_path):
    from macdmp.reproduce.worklist import Store

    store = Store(tmp_path)
    store.dir.mkdir(parents=True)
    (store.dir / "data.json").write_text('{"digest": ')
    with pytest.raises(ValueError, match=r"results/data\.json: line 1 column 12"):
        store.read("data")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--policy", "equal", "--seeds", "100000000"], "--seeds: at most 1,000"),
        (["evaluate", "--policy", "equal", "--frames", "1000000000"], "--frames: at most"),
        (["evaluate", "--policy", "equal", "--seeds", "1000", "--frames", "100000"],
         "--seeds x --frames: 1,000 seeds x 100,000 frames x 8 scenario/RF pairs"),
        (["sim-study", "--seeds", "5000"], "--seeds: at most 1,000"),
        (["demo", "--seeds", "5000"], "--seeds: at most 1,000"),
        (["simulate", "--episodes", "100000000"], "--episodes: must be in [1, 10,000]"),
        (["simulate", "--frames", "1000000000"], "--frames: must be in [1, 1,000,000]"),
        (["simulate", "--episodes", "1000", "--frames", "100000"], "--episodes x --frames"),
        (["collect", "--out", "x.h5", "--frames", "1000000000"], "--frames/--batch-size: one"),
    ],
)  # fmt: skip
def test_sizes_that_would_exhaust_memory_are_refused_at_once(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


TINY_TRAIN = {"horizon": 8, "dim": 8, "groups": 4, "n_diffusion_steps": 6, "inv_hidden": 16,
              "n_epochs": 1, "steps_per_epoch": 6, "log_every": 2, "ckpt_every": 4,
              "warmup_steps": 1, "ema_start": 1, "batch_size": 8}  # fmt: skip


def test_a_resume_onto_a_damaged_loss_log_names_it(tmp_path):
    from macdmp.methods.trainer import Trainer, train
    from macdmp.planner import make_config
    from macdmp.planner.synthetic import SyntheticWindows

    cfg = make_config("demo", **TINY_TRAIN)
    train(cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path, progress=False)
    log = tmp_path / "losses.jsonl"
    log.write_text(log.read_text().replace("}\n", "\n", 1))
    with pytest.raises(ValueError, match=r"losses\.jsonl: line 1: not valid JSON"):
        Trainer("ma-cdmp", cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path)


def test_train_on_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    import macdmp.methods.checkpoint as ck

    real = open

    def full_open(path, mode="r", *a, **k):
        if "w" in mode and ".partial-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, mode, *a, **k)

    monkeypatch.setattr(ck, "open", full_open, raising=False)
    data = tmp_path / "d.h5"
    collect(small(data, trajectories=4, frames=24), progress=False)
    run = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in TINY_TRAIN.items()]
    argv = ["train", "--data", str(data), "--out", str(run), "--quiet", "--device", "cpu"]
    assert main([*argv, "--set", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"macdmp train: error: {run / 'checkpoint.pt'}: cannot write: disk full (no space left "
        "on device); nothing was written there"
    ), err
    assert not list(run.glob(".*partial*"))


def test_a_blocking_wait_of_our_own_is_ended_by_the_signal():
    import threading

    from macdmp.common.signals import interruptible

    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    t0 = time.perf_counter()
    with pytest.raises(Stopped):
        with stop_at_safe_points():
            timer.start()
            with interruptible():
                time.sleep(30)  # a lock or a queue: the signal raises here, not 30 s later
    assert time.perf_counter() - t0 < 10
