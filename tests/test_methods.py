"""The method interface: a second method (behaviour cloning) trained by the one trainer and used
as a policy from its run folder; packed runs; older checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from macdmp.app.main import main
from macdmp.eval.evaluate import evaluate
from macdmp.methods import load_run, read_evals, read_losses, train
from macdmp.methods.checkpoint import CHECKPOINT_NAME, pick_device
from macdmp.methods.policy import RunPolicy, load_policy
from macdmp.planner import make_config
from macdmp.planner.synthetic import SyntheticWindows
from macdmp.sim.config import PRESETS
from macdmp.sim.core import BatchedNetworks

BC_SETS = ["--set", "n_epochs=1", "steps_per_epoch=80", "log_every=20", "hidden=32"]
TINY_CDMP = {
    "horizon": 8,
    "dim": 8,
    "groups": 4,
    "n_diffusion_steps": 10,
    "inv_hidden": 16,
    "n_epochs": 1,
    "steps_per_epoch": 12,
    "log_every": 4,
    "ckpt_every": 6,
    "warmup_steps": 2,
    "ema_start": 4,
    "batch_size": 8,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("methods") / "d.h5"
    args = ["collect", "--out", str(path), "--trajectories", "4", "--frames", "120"]
    assert main([*args, "--scenarios", "n8-2to6,n9-2to7", "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def bc_run(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bc") / "run"
    args = ["train", "--method", "bc", "--data", str(dataset), "--out", str(run), "--quiet"]
    evals = ["--eval-every", "40", "--set", "eval_frames=20", "eval_seeds=1"]
    assert main([*args, *BC_SETS, *evals]) == 0
    return run


def test_second_method_trains_and_its_run_folder_is_a_policy(bc_run, capsys):
    losses = read_losses(bc_run)
    assert [r["step"] for r in losses] == [20, 40, 60, 80]
    assert losses[-1]["loss"] < losses[0]["loss"]
    meta = json.loads((bc_run / "config.json").read_text())
    assert meta["method"] == "bc" and meta["config"]["hidden"] == 32
    evals = read_evals(bc_run)  # learning curve: the EMA policy on held-out networks
    assert [r["step"] for r in evals] == [40, 80]
    assert all(np.isfinite(r["avg_reward"]) and r["mean_delay_ms"] > 0 for r in evals)
    # A bare run folder is a policy in evaluate and simulate alike.
    res = evaluate([str(bc_run), "carried"], ["n8-2to6"], ["ideal"], n_seeds=1, frames=20)
    assert [r["policy"] for r in res["rows"]] == ["BC", "carried"]
    assert main(["simulate", "--policy", str(bc_run), "--frames", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames"] == 10


def test_decentralised_actor_shapes_and_locality(bc_run):
    pol = load_policy(str(bc_run))
    assert isinstance(pol, RunPolicy) and pol.decentralized
    # agents of an 8- and a 9-node network in one call
    obs = np.random.default_rng(0).integers(0, 30, size=(17, 4)).astype(np.float32)
    mf = np.random.default_rng(1).uniform(0, 30, size=(17, 4)).astype(np.float32)
    a = pol.act_agents(obs, mf)
    assert a.shape == (17,) and np.all((a >= 0) & (a <= 40))
    other = obs.copy()
    other[3] += 20  # another agent's observation: agent 0's action must not move
    b = pol.act_agents(other, mf + 5)  # BC ignores the mean field too
    assert b[0] == a[0] and b[3] != a[3]
    sim = BatchedNetworks(PRESETS["n9-2to7"], [2**31])
    pol.reset(sim)
    assert pol.act(sim.obs, sim.mean_field(sim.obs)).shape == (1, 9)


def test_run_policy_options_and_errors(bc_run, tmp_path):
    with pytest.raises(ValueError, match="keys device, threads, weights"):
        load_policy(f"{bc_run},solver=dpm2")  # an MA-CDMP option; BC has none of its own
    with pytest.raises(ValueError, match="bc takes no options"):
        RunPolicy(bc_run, solver="dpm2")
    with pytest.raises(ValueError, match="threads"):
        load_policy(f"{bc_run},threads=0")
    assert load_policy(f"macdmp:{bc_run},weights=raw").label == "BC"
    with pytest.raises(ValueError, match="unknown policy"):
        load_policy(str(tmp_path / "nothing"))


def test_boost_asks_more_up_to_the_own_backlog(bc_run):
    """``boost=B``: min(B x the actor's demand, the agent's own backlog), per agent."""
    plain, boosted = load_policy(str(bc_run)), load_policy(f"{bc_run},boost=1.5")
    assert boosted.label == "BC [boost 1.5]" and boosted.describe()["boost"] == 1.5
    assert "boost" not in plain.describe()
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 30, size=(17, 4)).astype(np.float32)
    obs[:5, [0, 2]] = 0.0  # five agents with nothing queued
    obs[5:9, 0], obs[5:9, 2] = 200.0, 100.0  # four with far more than they could be granted
    mf = rng.uniform(0, 30, size=(17, 4)).astype(np.float32)
    a, b = plain.act_agents(obs, mf), boosted.act_agents(obs, mf)
    held = obs[:, 0].astype(np.float64) + obs[:, 2]
    np.testing.assert_allclose(b, np.minimum(1.5 * a, held))
    assert np.all(b[:5] == 0.0) and np.all(b[5:9] == 1.5 * a[5:9]) and np.all(a[5:9] > 0)
    for bad in ("0.5", "nan", "x"):
        with pytest.raises(ValueError, match="boost"):
            load_policy(f"{bc_run},boost={bad}")


def test_cli_refuses_bad_method_options(dataset, tmp_path, capsys):
    base = ["train", "--data", str(dataset), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*base, "--method", "nope"]) == 2
    assert "--method: 'nope' is not one of" in capsys.readouterr().err
    assert main([*base, "--method", "ma-td3bc", "--no-mf"]) == 2  # acts on its own observation
    assert "--no-mf: method ma-td3bc has no mean field" in capsys.readouterr().err
    assert main([*base, "--method", "bc", "--set", "dim=3"]) == 2
    assert "unknown key 'dim' for method bc" in capsys.readouterr().err
    assert main([*base, "--method", "bc", "--steps", "0"]) == 2
    assert "--steps: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def _tiny_sets() -> list[str]:
    return ["--set", *[f"{k}={v}" for k, v in TINY_CDMP.items()]]


def test_packed_runs_train_as_they_would_alone(dataset, tmp_path):
    alone = tmp_path / "alone"
    assert (
        main(["train", "--data", str(dataset), "--out", str(alone), "--quiet", *_tiny_sets()]) == 0
    )
    plan = tmp_path / "plan.toml"
    table = ", ".join(f"{k} = {v}" for k, v in TINY_CDMP.items())
    plan.write_text(
        f'data = "{dataset}"\n'
        f'[[run]]\nout = "{tmp_path / "a"}"\nset = {{ {table} }}\n'
        f'[[run]]\nout = "{tmp_path / "b"}"\nmethod = "bc"\nsteps = 30\n'
    )
    assert main(["train", "--plan", str(plan), "--quiet"]) == 0
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_s"} for r in recs]  # noqa: E731
    assert strip(read_losses(tmp_path / "a")) == strip(read_losses(alone))
    assert read_losses(tmp_path / "b")[-1]["step"] == 30
    assert load_run(tmp_path / "b").name == "bc"
    # several seeds of one configuration, packed
    out = tmp_path / "seeds"
    args = ["train", "--data", str(dataset), "--out", str(out), "--seeds", "3,4", "--quiet"]
    assert main([*args, *_tiny_sets()]) == 0
    a, b = (read_losses(out / f"seed-{s}") for s in (3, 4))
    assert len(a) == len(b) == 3 and a[-1]["loss"] != b[-1]["loss"]
    assert load_run(out / "seed-4").cfg.seed == 4


def test_older_checkpoints_are_read_on_purpose(tmp_path):
    cfg = make_config("demo", **TINY_CDMP)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    train(cfg, data, tmp_path, progress=False)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    new = load_run(tmp_path)
    # the macdmp-planner-v1 layout, as the first release wrote it (numpy statistics, no
    # content digest): read safely, with weights_only=True and numpy's arrays allowed
    drop = ("method", "method_version", "wall_s", "digest", "data_path")
    old = {k: v for k, v in ckpt.items() if k not in drop}
    old["stats"] = {k: v.numpy() for k, v in old["stats"].items()}
    old["format"] = "macdmp-planner-v1"
    old["torch_rng"] = old.pop("rng")
    acc = old.pop("log_acc").tolist()
    old["log_acc"] = {"sums": dict(zip(("loss", "inv", "diff", "cls"), acc, strict=False)), "n": 0}
    torch.save(old, tmp_path / CHECKPOINT_NAME)
    loaded = load_run(tmp_path)
    assert loaded.name == "ma-cdmp" and loaded.train_step == ckpt["step"]
    for k, v in new.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    # ... and a run in that format resumes under the new trainer
    train(cfg.replace(n_epochs=2), data, tmp_path, progress=False)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["format"] == "macdmp-run-v1"


def test_pick_device_tunes_cudnn_only_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert pick_device("cpu").type == "cpu" and torch.backends.cudnn.benchmark is False
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda" and torch.backends.cudnn.benchmark is True
    else:
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")
        assert torch.backends.cudnn.benchmark is False
