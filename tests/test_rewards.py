"""Reward choices made when the windows are built, and datasets mixed from several policies."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from macdmp.data.collect import CollectSettings, collect, parse_policy_mix
from macdmp.data.format import FORMAT_VERSION, TOTAL_FIELDS_V2, DatasetError, _sha256, validate
from macdmp.data.rewards import DROP_PENALTY, REWARDS, frame_rewards
from macdmp.data.windows import open_windows
from macdmp.methods import Trainer
from macdmp.methods.base import make_config


def hand_made() -> dict[str, np.ndarray]:
    """One trajectory, 2 frames, 3 nodes on a path 0 - 1 - 2, with known queues and drops."""
    obs = np.zeros((1, 3, 3, 4), dtype=np.uint16)
    # [gen, gen_max, tran, tran_max]; the backlog is gen + tran
    obs[0, 1] = [[2, 9, 1, 9], [0, 9, 4, 9], [5, 9, 0, 9]]  # backlogs 3, 4, 5 after frame 0
    obs[0, 2] = [[1, 9, 0, 9], [0, 9, 0, 9], [0, 9, 2, 9]]  # backlogs 1, 0, 2 after frame 1
    adj = np.zeros((1, 3, 3), dtype=bool)
    adj[0, 0, 1] = adj[0, 1, 0] = adj[0, 1, 2] = adj[0, 2, 1] = True
    rewards = np.array([[[-3.0, -3.0, -0.0], [-2.5, -3.0, -7.0]]], dtype=np.float32)
    dropped = np.array([[[0, 2, 0], [1, 0, 0]]], dtype=np.uint16)
    return {"obs": obs, "adjacency": adj, "rewards": rewards, "dropped": dropped}


EXPECTED = {
    "delay": [[-3, -3, 0], [-2.5, -3, -7]],
    "own-backlog": [[-3, -4, -5], [-1, 0, -2]],
    # own + mean over neighbours: node 0 has {1}, node 1 has {0, 2}, node 2 has {1}
    "own+neighbours-backlog": [[-7, -8, -9], [-1, -1.5, -2]],
    "network-backlog": [[-4, -4, -4], [-1, -1, -1]],
    "own-backlog+drops": [[-3, -4 - 2 * DROP_PENALTY, -5], [-1 - DROP_PENALTY, 0, -2]],
}


@pytest.mark.parametrize("reward", REWARDS)
def test_each_reward_on_a_hand_made_trajectory(reward):
    r = frame_rewards(reward, hand_made())
    assert r.shape == (1, 2, 3) and r.dtype == np.float32
    np.testing.assert_allclose(r[0], EXPECTED[reward])


def test_reward_choice_errors():
    assert set(EXPECTED) == set(REWARDS)
    with pytest.raises(ValueError, match="reward: 'backlog' is not one of delay, own-backlog"):
        frame_rewards("backlog", hand_made())
    old = {k: v for k, v in hand_made().items() if k != "dropped"}  # a version 1 file
    with pytest.raises(ValueError, match=r"needs the stored arrays \['dropped'\]"):
        frame_rewards("own-backlog+drops", old)
    with pytest.raises(ValueError, match="reward: must be one of delay, own-backlog.*got 'nope'"):
        make_config("ma-cdmp", "demo", reward="nope")
    with pytest.raises(ValueError, match="reward: must be one of delay, own-backlog.*got 'nope'"):
        make_config("bc", "demo", reward="nope")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("mix") / "mixed.h5"
    settings = CollectSettings(out=str(p), scenarios=["n8-4to4", "n9-2to7"], trajectories=8,
                               frames=24, seed=3, batch_size=2,
                               policies=["behaviour:0.2=2", "maxweight", "equal"])  # fmt: skip
    collect(settings, progress=False)
    return p


def test_mixed_collection_records_each_trajectorys_policy(mixed):
    header = validate(mixed)
    assert header.format_version == FORMAT_VERSION
    specs = [p["spec"] for p in header.policies]
    assert specs == ["behaviour:0.2", "maxweight", "equal"]
    assert header.policies[0]["sigma"] == 0.2 and header.policies[1]["name"] == "maxweight"
    assert header.behaviour_policy["name"] == "mixture"
    with h5py.File(mixed) as f:
        for name in ("n8-4to4", "n9-2to7"):
            g = f["scenarios"][name]
            pol, act = g["policy"][:], g["actions"][:]
            # 4 trajectories per scenario, weights 2:1:1
            assert pol.tolist() == [0, 0, 1, 2]
            n = act.shape[2]
            # equal's demands are exactly M x L / N; maxweight's whole RBs; behaviour's not
            np.testing.assert_allclose(act[pol == 2], 40 / n)
            assert np.all(act[pol == 1] == np.round(act[pol == 1]))
            assert not np.all(act[pol == 0] == np.round(act[pol == 0]))
            drops = g["dropped"][:].astype(np.int64).sum(axis=(1, 2))
            tot = g["totals"][:]
            np.testing.assert_array_equal(drops, tot[:, 2] + tot[:, 3])
        command = f.attrs["command"]
    assert "--policies behaviour:0.2=2.0,maxweight=1.0,equal=1.0" in command
    # a tampered policy index is caught
    bad = mixed.parent / "bad.h5"
    bad.write_bytes(mixed.read_bytes())
    with h5py.File(bad, "r+") as f:
        f.attrs["policies"] = json.dumps(json.loads(f.attrs["policies"])[:1])
    with pytest.raises(DatasetError, match="policy index is not below len"):
        validate(bad)


def test_windows_use_the_chosen_reward(mixed):
    with h5py.File(mixed) as f:
        raw = {name: {k: g[k][:] for k in g} for name, g in f["scenarios"].items()}
    for reward in ("delay", "own+neighbours-backlog"):
        ds = open_windows(mixed, 6, 0.9, reward=reward)
        assert ds.reward == reward and reward in repr(ds)
        index = np.random.default_rng(1).integers(0, ds.n_windows, 40)
        got = ds.get(index)
        torch_y = ds.torch_sampler("cpu", ("y", "rew")).get(__import__("torch").as_tensor(index))
        for b, w in enumerate(index):
            name, traj, agent, t = ds.locate(int(w))
            r = frame_rewards(reward, raw[name])[traj, t : t + 6, agent]
            want = sum(0.9**k * float(r[k]) for k in range(6))
            assert got["y"][b] == pytest.approx(want, rel=1e-5, abs=1e-4)
            assert float(torch_y["y"][b]) == pytest.approx(want, rel=1e-5, abs=1e-4)
            np.testing.assert_allclose(torch_y["rew"][b].numpy(), r)


def test_reward_is_stored_with_the_run_and_must_match_the_windows(mixed, tmp_path):
    kw = dict(horizon=8, dim=8, groups=4, n_diffusion_steps=4, inv_hidden=8, max_steps=2,
              batch_size=4, warmup_steps=0, ema_start=0, ckpt_every=2, log_every=1)  # fmt: skip
    cfg = make_config("ma-cdmp", "demo", reward="own-backlog", **kw)
    ds = open_windows(mixed, 8, cfg.gamma, reward="own-backlog")
    tr = Trainer("ma-cdmp", cfg, ds, tmp_path / "run", device="cpu")
    tr.run(progress=False)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["config"]["reward"] == "own-backlog"
    from macdmp.methods import load_run

    assert load_run(tmp_path / "run", "cpu").cfg.reward == "own-backlog"
    from macdmp.methods.policy import RunPolicy

    pol = RunPolicy.from_spec(f"{tmp_path / 'run'},device=cpu")
    assert "reward own-backlog" in pol.label and pol.describe()["reward"] == "own-backlog"
    assert RunPolicy.from_spec(f"{tmp_path / 'run'},device=cpu,label=mine").label == "mine"
    with pytest.raises(ValueError, match="reward: dataset windows use 'delay'"):
        Trainer("ma-cdmp", cfg, open_windows(mixed, 8, cfg.gamma), tmp_path / "r2", device="cpu")


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (["static:4"], "is not one of behaviour"),
        (["behaviour:-1"], "behaviour noise: must be a finite sigma"),
        (["maxweight=0"], "weight of 'maxweight' must be > 0"),
        (["maxweight=x"], "weight of 'maxweight' must be a number"),
        (["equal", "equal"], "listed twice"),
        (["nope"], "'nope' is not one of"),
    ],
)
def test_bad_policy_mixes_are_refused(policies, message):
    with pytest.raises(ValueError, match=message):
        parse_policy_mix(policies)


def test_bad_collect_options_are_refused(tmp_path, capsys):
    from macdmp.app.main import main

    out = str(tmp_path / "x.h5")
    s = CollectSettings(out=out, scenarios=["n8-4to4"], trajectories=2, frames=5,
                        policies=["equal", "maxweight", "proportional"])  # fmt: skip
    with pytest.raises(ValueError, match="3 policies need at least 3 trajectories per scenario"):
        s.check()
    assert main(["collect", "--out", out, "--quality", "good", "--behaviour-noise", "0.3"]) == 2
    assert "give only one of --behaviour-noise, --quality" in capsys.readouterr().err
    assert main(["collect", "--out", out, "--policies", "ratio=-2"]) == 2
    assert "--policies: weight of 'ratio' must be > 0" in capsys.readouterr().err
    assert not Path(out).exists()


def test_version_1_files_still_read(mixed, tmp_path):
    old = tmp_path / "v1.h5"
    old.write_bytes(mixed.read_bytes())
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 1
        del f.attrs["policies"]
        for g in f["scenarios"].values():
            del g["dropped"], g["policy"]
            totals = g["totals"][:, : len(TOTAL_FIELDS_V2)]  # v1 and v2: no dropped_route
            del g["totals"]
            g["totals"] = totals
            g["totals"].attrs["sha256"] = _sha256(totals)
    header = validate(old)
    assert header.format_version == 1 and header.policies == [header.behaviour_policy]
    assert open_windows(old, 6, 0.9, reward="own-backlog").n_windows > 0
    with pytest.raises(DatasetError, match="reward 'own-backlog\\+drops' needs \\['dropped'\\]"):
        open_windows(old, 6, 0.9, reward="own-backlog+drops")


def test_maxweight_water_fill_matches_one_rb_at_a_time():
    """The mixed datasets' maxweight share is collected with the closed form; it must hand
    out exactly what the definition (one RB at a time to the longest backlog) does."""
    from macdmp.policies.allocators import _one_at_a_time, _water_fill

    rng = np.random.default_rng(0)
    for trial in range(500):
        b, n = int(rng.integers(1, 6)), int(rng.integers(2, 10))
        q = rng.integers(0, [3, 10, 30, 300][trial % 4], size=(b, n)).astype(np.float64)
        if trial % 3 == 0:
            q[:, : n // 2] = q[:, :1]  # ties go to the first node
        np.testing.assert_array_equal(_water_fill(q, 40), _one_at_a_time(q, 40))


def test_reward_diagnostic_script(mixed, tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "experiments" / "reward_diagnostic.py"
    spec = importlib.util.spec_from_file_location("reward_diagnostic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "diag.json"
    argv = [str(mixed), "--frames", "20", "--horizon", "4", "--every", "2", "--json", str(out)]
    assert mod.main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["pooled"]) == set(REWARDS)
    assert all(-1 <= v <= 1 for v in res["pooled"].values())
    # equal's demands on light nodes and maxweight's zeros: only positive demands count
    assert res["points"] > 0 and res["skipped"] > 0
    assert "| `own-backlog` |" in capsys.readouterr().out
    # the discounted returns are those of the windows
    arrays = hand_made()
    arrays["actions"] = np.ones((1, 2, 3), dtype=np.float32)
    arrays["carried_ppf"] = np.ones((1, 3))
    noise, rets = mod.noise_and_returns(arrays, 3.0, ["own-backlog"], 2, 0.5, 1)
    np.testing.assert_allclose(noise, 0.0)
    np.testing.assert_allclose(rets["own-backlog"], [-3 - 0.5, -4 - 0, -5 - 1])


def test_a_plan_packs_runs_on_different_datasets_and_rewards(mixed, tmp_path):
    from macdmp.app.main import main

    other = tmp_path / "other.h5"
    collect(CollectSettings(out=str(other), scenarios=["n8-4to4"], trajectories=2, frames=24,
                            seed=5), progress=False)  # fmt: skip
    tiny = ("horizon = 8, dim = 8, groups = 4, n_diffusion_steps = 4, inv_hidden = 8, "
            "batch_size = 4, warmup_steps = 0, ema_start = 0, ckpt_every = 2")  # fmt: skip
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[run]]\nout = "{tmp_path / "a"}"\ndata = "{mixed}"\nsteps = 2\n'
        f'set = {{ reward = "own+neighbours-backlog", {tiny} }}\n'
        f'[[run]]\nout = "{tmp_path / "b"}"\ndata = "{other}"\nsteps = 2\nset = {{ {tiny} }}\n'
    )
    assert main(["train", "--plan", str(plan), "--device", "cpu", "--quiet"]) == 0
    from macdmp.methods import load_run

    a, b = load_run(tmp_path / "a", "cpu"), load_run(tmp_path / "b", "cpu")
    assert a.cfg.reward == "own+neighbours-backlog" and b.cfg.reward == "delay"
    assert a.fingerprint == open_windows(mixed, 8, 0.99).fingerprint
    assert b.fingerprint == open_windows(other, 8, 0.99).fingerprint
