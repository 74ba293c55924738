"""The offline MARL baselines MA-CQL, MA-TD3+BC and MA-DT on the method interface: they learn a
synthetic problem whose best action is known, act per agent on their own observation, reload
from run folders, and (MA-DT) keep and reset a per-agent context."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from macdmp.app.main import main
from macdmp.eval.evaluate import evaluate
from macdmp.methods import load_run, read_losses, train
from macdmp.methods.base import get_method, make_config
from macdmp.methods.policy import RunPolicy, load_policy

METHODS = ("ma-cql", "ma-td3bc", "ma-dt")
RBS = 40.0


class BanditWindows:
    """Windows of short trajectories where the best demand is known: a* = o[0] (RBs).

    Observations are drawn independently each frame (o[0] in [5, 35]); the behaviour policy
    demands a* + sigma * N(0, 1), clipped to [0, 40], with a noise level sigma drawn per
    trajectory from [2, 20]; the reward is -|a - a*|. A window is a whole trajectory of
    ``horizon`` frames, so ``rtg`` is the sum of the rewards from each frame to its end.
    """

    obs_dim = 4

    def __init__(self, horizon: int, gamma: float, seed: int = 0) -> None:
        self.horizon, self.gamma, self.rbs = horizon, gamma, RBS
        self.fingerprint = hashlib.sha256(f"bandit:{horizon}:{gamma}:{seed}".encode()).hexdigest()
        big = self._draw(20_000, torch.Generator().manual_seed(12345))
        f = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
        x = big["x"].reshape(-1, 4)
        self.stats = {
            "obs_mean": f(x.mean(0)), "obs_std": f(x.std(0)),
            "mf_mean": f(x.mean(0)), "mf_std": f(x.std(0)),
            "act_mean": f(big["act"].mean()), "act_std": f(big["act"].std()),
            "ret_mean": f(big["y"].mean()), "ret_std": f(big["y"].std()),
            "rew_mean": f(big["rew"].mean()), "rew_std": f(big["rew"].std()),
            "rtg_mean": f(big["rtg"][:, 0].mean()), "rtg_std": f(big["rtg"][:, 0].std()),
            "rtg_start_best": f(big["rtg"][:, 0].quantile(0.9)),
        }  # fmt: skip
        self._big = big

    def _draw(self, b: int, gen: torch.Generator | None, device="cpu") -> dict:
        h = self.horizon
        x = torch.rand((b, h, 4), generator=gen, device=device) * 30.0 + 5.0
        sigma = torch.rand((b, 1), generator=gen, device=device) * 18.0 + 2.0
        eps = torch.randn((b, h), generator=gen, device=device)
        act = (x[..., 0] + sigma * eps).clamp(0.0, self.rbs)
        rew = -(act - x[..., 0]).abs()
        rtg = rew.flip(1).cumsum(1).flip(1)
        disc = self.gamma ** torch.arange(h, dtype=torch.float32, device=device)
        return {"x": x, "xbar": x.mean(0).expand_as(x), "act": act, "rew": rew, "rtg": rtg,
                "y": rew @ disc}  # fmt: skip

    def torch_sampler(self, device, keys):
        data = self

        class Sampler:
            def sample(self, b, generator=None):
                out = data._draw(b, generator, device)
                return {k: out[k] for k in keys}

        return Sampler()

    def data_reward(self) -> float:
        return float(self._big["rew"].mean())

    def avg_action_reward(self) -> float:
        """The reward of always demanding the data's average action."""
        x = self._big["x"][..., 0]
        return float(-(self._big["act"].mean() - x).abs().mean())


def policy_reward(method, data: BanditWindows, agents: int = 512, frames: int | None = None):
    """The actor's mean reward on fresh observations, over ``frames`` frames of one episode."""
    frames = data.horizon if frames is None else frames
    actor = method.make_actor(seed=0)
    actor.reset(agents)
    gen = np.random.default_rng(7)
    total = 0.0
    for _ in range(frames):
        obs = gen.uniform(5.0, 35.0, size=(agents, 4)).astype(np.float32)
        a = actor.act(obs, obs)
        total += float(-np.abs(a - obs[:, 0]).mean())
    return total / frames


SYNTH = {
    "ma-cql": {"hidden": 64, "max_steps": 250, "batch_size": 128},
    "ma-td3bc": {"hidden": 64, "max_steps": 250, "batch_size": 128},
    "ma-dt": {
        "horizon": 4,
        "embed": 32,
        "layers": 1,
        "warmup_steps": 20,
        "lr": 1e-3,
        "max_steps": 200,
        "batch_size": 64,
    },  # fmt: skip
}


@pytest.mark.parametrize("name", METHODS)
def test_loss_falls_and_policy_beats_the_data(name, tmp_path):
    torch.set_num_threads(1)
    cfg = make_config(name, "demo", gamma=0.5, log_every=50, **SYNTH[name])
    data = BanditWindows(cfg.horizon, cfg.gamma)
    train(cfg, data, tmp_path, method=name, progress=False)
    losses = read_losses(tmp_path)
    key = "loss" if name == "ma-dt" else "critic"
    assert losses[-1][key] < 0.7 * losses[0][key], [r[key] for r in losses]
    model = load_run(tmp_path)
    got = policy_reward(model, data)
    assert got > data.avg_action_reward() + 1.0, (got, data.avg_action_reward())
    assert got > data.data_reward() + 1.0, (got, data.data_reward())


def _untrained(name: str):
    cls = get_method(name)
    over = {"horizon": 4, "embed": 16, "layers": 1} if name == "ma-dt" else {"hidden": 16}
    cfg = make_config(name, "demo", **over)
    torch.manual_seed(0)
    return cls(cfg, BanditWindows(cfg.horizon, cfg.gamma).stats, RBS).eval()


@pytest.mark.parametrize("name", METHODS)
def test_actors_are_decentralised_with_the_right_shapes(name):
    model = _untrained(name)
    rng = np.random.default_rng(0)
    # the agents of an 8- and a 9-node network in one call, over several frames
    obs = [rng.integers(0, 30, size=(17, 4)).astype(np.float32) for _ in range(6)]
    mf = [rng.uniform(0, 30, size=(17, 4)).astype(np.float32) for _ in range(6)]
    a, b = model.make_actor(), model.make_actor()
    a.reset(17)
    b.reset(17)
    for t in range(6):
        other = obs[t].copy()
        other[3] += 7.0  # another agent's observation, and every mean field, change
        da, db = a.act(obs[t], mf[t]), b.act(other, mf[t] + 5.0)
        assert da.shape == (17,) and np.all((da >= 0) & (da <= RBS))
        keep = np.arange(17) != 3
        np.testing.assert_array_equal(da[keep], db[keep])  # only agent 3 may move
    assert da[3] != db[3]


def test_dt_resets_its_context_between_episodes():
    model = _untrained("ma-dt")
    rng = np.random.default_rng(1)
    frames = [rng.uniform(0, 30, size=(5, 4)).astype(np.float32) for _ in range(7)]
    actor = model.make_actor()
    actor.reset(5)
    first = [actor.act(o, o) for o in frames]
    assert actor.rtg.shape == (5, 4) and actor.obs.shape == (5, 4, 4)  # capped at K = 4
    assert not np.allclose(first[0], first[-1])
    actor.reset(5)  # a new episode: the same observations give the same actions again
    again = [actor.act(o, o) for o in frames]
    np.testing.assert_allclose(np.stack(again), np.stack(first), rtol=1e-5, atol=1e-5)
    actor.reset(3)  # and the number of agents may change with the episode
    assert actor.act(frames[0][:3], frames[0][:3]).shape == (3,)
    with pytest.raises(ValueError, match="agents"):
        actor.act(frames[0], frames[0])
    with pytest.raises(ValueError, match="target"):
        model.make_actor(target=5.0)


def test_configs_are_validated():
    with pytest.raises(ValueError, match="horizon"):
        make_config("ma-td3bc", "demo", horizon=3)
    with pytest.raises(ValueError, match="cql_alpha"):
        make_config("ma-cql", "demo", cql_alpha=-1.0)
    with pytest.raises(ValueError, match="heads"):
        make_config("ma-dt", "demo", heads=3)
    for name in METHODS:
        assert {"demo", "paper"} <= set(get_method(name).presets)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baselines") / "d.h5"
    args = ["collect", "--out", str(path), "--trajectories", "4", "--frames", "120"]
    assert main([*args, "--scenarios", "n8-2to6,n9-2to7", "--quiet"]) == 0
    return path


CLI_SETS = {
    "ma-cql": ["hidden=16"],
    "ma-td3bc": ["hidden=16"],
    "ma-dt": ["embed=16", "layers=1", "warmup_steps=2"],
}


@pytest.mark.parametrize("name", METHODS)
def test_run_folders_train_reload_and_evaluate(name, dataset, tmp_path):
    run = tmp_path / name
    args = ["train", "--method", name, "--data", str(dataset), "--out", str(run), "--quiet"]
    sets = ["--set", "max_steps=12", "log_every=6", "batch_size=16", *CLI_SETS[name]]
    assert main([*args, *sets]) == 0
    assert [r["step"] for r in read_losses(run)] == [6, 12]
    pol = load_policy(str(run))
    assert isinstance(pol, RunPolicy) and pol.decentralized and pol.name == name
    res = evaluate([str(run), "carried"], ["n8-2to6"], ["ideal"], n_seeds=1, frames=25)
    rows = res["rows"]
    assert [r["policy"] for r in rows] == [get_method(name).label, "carried"]
    assert all(np.isfinite(r["avg_reward"]) for r in rows if "avg_reward" in r)
    cmd = ["evaluate", "--policy", str(run), "--scenarios", "n9-2to7", "--seeds", "1"]
    assert main([*cmd, "--frames", "10"]) == 0
    if name == "ma-dt":
        assert load_policy(f"{run},target=-50").actor.target == -50.0


def test_bc_with_the_mean_field_learns_what_only_the_neighbours_tell():
    """use_mf=True: BC also sees the neighbours' mean observation. On data whose demand is the
    mean field's first entry, it learns the demand; BC on its own observation cannot. Without
    it, the model keeps the layout of earlier run folders (no mean-field buffers)."""
    g = torch.Generator().manual_seed(0)

    def batch(b: int = 256) -> dict:
        x, xbar = torch.rand(b, 1, 4, generator=g) * 30, torch.rand(b, 1, 4, generator=g) * 30
        return {"x": x, "xbar": xbar, "act": xbar[..., 0].clone()}

    big = batch(20_000)
    f = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    stats = {
        "obs_mean": f(big["x"].mean((0, 1))), "obs_std": f(big["x"].std((0, 1))),
        "mf_mean": f(big["xbar"].mean((0, 1))), "mf_std": f(big["xbar"].std((0, 1))),
        "act_mean": f(big["act"].mean()), "act_std": f(big["act"].std()),
    }  # fmt: skip
    errors = {}
    for use_mf in (False, True):
        cfg = make_config("bc", "demo", use_mf=use_mf)
        # off, the configuration (config.json, the bench's unit digests) is the one recorded
        # before the field existed
        assert ("use_mf" in cfg.to_dict()) == use_mf
        torch.manual_seed(0)
        model = get_method("bc")(cfg, stats, RBS)
        assert ("mf_mean" in dict(model.named_buffers())) == use_mf
        assert model.batch_keys(cfg) == (("x", "xbar", "act") if use_mf else ("x", "act"))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(300):
            loss = model.loss(batch())["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        test = batch(2_000)
        actor = model.make_actor()
        demand = actor.act(test["x"][:, 0].numpy(), test["xbar"][:, 0].numpy())
        errors[use_mf] = float(np.mean(np.abs(demand - test["act"][:, 0].numpy())))
        assert actor.label == ("BC + MF" if use_mf else "BC")
    assert errors[True] < 1.0 < 5.0 < errors[False]  # mean |error| in RBs (demands 0-30)
