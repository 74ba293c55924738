"""Classifier-free guidance in the one sampler, and the diffusion baselines MA-Diffuser, MA-DD
and MADiff on the method interface: they train, act with the right shapes, act on the agent's
own observation only, and (MADiff) mix networks of 8 and 9 nodes without padding leaking."""

from __future__ import annotations

import pytest
import torch

from macdmp.diffusion import NoiseSchedule, TemporalUNet, condition_keep, sample

# ---- classifier-free guidance on a Gaussian toy ----------------------------------------------
# x_0 | c ~ N(c, S^2) per entry, c ~ N(0, T^2): the unconditional x_0 ~ N(0, S^2 + T^2). The exact
# noise models of both are closed-form, so the sampler is tested apart from any training.
S, T = 0.5, 1.0


def _gauss_eps(sch: NoiseSchedule, mean: torch.Tensor, var: float, x, k) -> torch.Tensor:
    shape = (-1,) + (1,) * (x.dim() - 1)
    abar = sch.alpha_bars[k].view(shape)
    m = mean.view((-1,) + (1,) * (x.dim() - 1))
    return (1 - abar).sqrt() * (x - abar.sqrt() * m) / (abar * var + 1 - abar)


def _cfg_toy_model(sch: NoiseSchedule, calls: list):
    def eps(x, k, cond, keep):
        calls.append(x.shape[0])
        c = cond[:, 0]
        e_c = _gauss_eps(sch, c, S**2, x, k)
        e_u = _gauss_eps(sch, torch.zeros_like(c), S**2 + T**2, x, k)
        w = keep.view((-1,) + (1,) * (x.dim() - 1))
        return w * e_c + (1 - w) * e_u

    return eps


@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm2", 10)])
def test_cfg_moves_samples_to_the_condition_and_beyond(solver, steps):
    sch = NoiseSchedule(50)
    b, c = 2000, 1.5
    cond = torch.full((b, 1), c)
    means, calls = {}, []
    for w in (0.0, 1.0, 2.0):
        calls.clear()
        gen = torch.Generator().manual_seed(0)
        z = sample(_cfg_toy_model(sch, calls), sch, (b, 4, 2), solver=solver, steps=steps,
                   condition=cond, cfg=w, generator=gen)  # fmt: skip
        means[w] = float(z.mean())
        # w in {0, 1}: one call of the batch; otherwise cond and uncond in one call of 2B
        assert set(calls) == ({b} if w in (0.0, 1.0) else {2 * b})
    tol = 0.05 if solver == "ddpm" else 0.2  # DPM starts at alpha >= 0.1 (sampler.py)
    assert abs(means[0.0]) < 0.05, means
    assert abs(means[1.0] - c) < tol * c, means
    assert means[2.0] > means[1.0] + 0.3, means  # w > 1 pushes beyond the condition


def test_sampler_without_condition_is_unchanged_and_validates():
    sch = NoiseSchedule(10)
    eps = lambda x, k: 0.1 * x  # noqa: E731
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = sample(eps, sch, (5, 4, 2), generator=g())
    b = sample(eps, sch, (5, 4, 2), generator=g(), cfg=1.0)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="cfg"):
        sample(eps, sch, (5, 4, 2), cfg=2.0)
    with pytest.raises(ValueError, match="condition"):
        sample(lambda x, k, c, m: x, sch, (5, 4, 2), condition=torch.zeros(4, 1))


def test_unet_keep_mask_drops_the_condition():
    torch.manual_seed(0)
    unet = TemporalUNet(8, 4, dim=8, dim_mults=(1, 2), groups=4, cond_dim=2)
    x, k = torch.randn(3, 8, 4), torch.tensor([0, 3, 7])
    c1, c2 = torch.randn(3, 2), torch.randn(3, 2)
    drop = torch.zeros(3)
    torch.testing.assert_close(unet(x, k, c1, drop), unet(x, k, c2, drop))
    keep = torch.ones(3)
    torch.testing.assert_close(unet(x, k, c1, keep), unet(x, k, c1))
    assert not torch.allclose(unet(x, k, c1, keep), unet(x, k, c2, keep))
    mask = condition_keep(10_000, 0.25, torch.Generator().manual_seed(0), "cpu")
    assert set(mask.unique().tolist()) == {0.0, 1.0} and abs(float(mask.mean()) - 0.75) < 0.02
    with pytest.raises(ValueError, match="condition_dropout"):
        condition_keep(4, 1.0, None, "cpu")


# ---- the three methods ----------------------------------------------------------------------
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from test_baselines import RBS, BanditWindows, policy_reward  # noqa: E402

from macdmp.app.main import main  # noqa: E402
from macdmp.diffusion import AgentAttentionUNet  # noqa: E402
from macdmp.methods import load_run, read_losses, train  # noqa: E402
from macdmp.methods.base import get_method, make_config  # noqa: E402
from macdmp.methods.policy import RunPolicy, load_policy  # noqa: E402

METHODS = ("ma-diffuser", "ma-dd", "madiff")
TINY = {"dim": 8, "dim_mults": (1, 2), "groups": 4, "horizon": 4, "n_diffusion_steps": 6}
TINY_METHOD = {"ma-diffuser": {"candidates": 3}, "ma-dd": {"inv_hidden": 16},
               "madiff": {"inv_hidden": 16, "heads": 2}}  # fmt: skip


class JointBanditWindows(BanditWindows):
    """BanditWindows as joint windows of networks of 8 and 9 agents, padded to 9. The padded
    agent's entries hold junk (``junk`` sets its scale), which must never matter."""

    n_max = 9

    def __init__(self, horizon: int, gamma: float, seed: int = 0, junk: float = 1e3) -> None:
        super().__init__(horizon, gamma, seed)
        self.junk = junk

    def joint(
        self, b: int, gen: torch.Generator | None, device="cpu", junk_seed: int | None = None
    ):
        n = self.n_max
        per = self._draw(b * n, gen, device)
        sizes = torch.randint(8, n + 1, (b,), generator=gen, device=device)
        mask = (torch.arange(n, device=device)[None] < sizes[:, None]).float()
        me = (torch.rand((b,), generator=gen, device=device) * sizes).long()
        out = {"jx": per["x"].view(b, n, -1, 4), "jact": per["act"].view(b, n, -1),
               "jy": per["y"].view(b, n), "jmask": mask, "jself": me}  # fmt: skip
        # the junk comes from its own seed when one is given (the padding test), else from the
        # sampler's generator (a new generator cannot be made inside a captured CUDA graph)
        junk = gen if junk_seed is None else torch.Generator(device=device).manual_seed(junk_seed)
        for k in ("jx", "jact", "jy"):
            v = out[k]
            noise = self.junk * torch.randn(v.shape, generator=junk, device=device)
            pad = (mask == 0).view(b, n, *([1] * (v.dim() - 2)))
            out[k] = torch.where(pad, noise, v)
        return out

    def torch_sampler(self, device, keys):
        data = self

        class Sampler:
            def sample(self, b, generator=None):
                out = data.joint(b, generator, device)
                return {k: out[k] for k in keys}

        return Sampler()


def _data(name: str, cfg):
    cls = JointBanditWindows if name == "madiff" else BanditWindows
    return cls(cfg.horizon, cfg.gamma)


def _untrained(name: str):
    cfg = make_config(name, "demo", **TINY, **TINY_METHOD[name])
    torch.manual_seed(0)
    model = get_method(name)(cfg, _data(name, cfg).stats, RBS).eval()
    model.normalizer.act_std.fill_(1.0)  # untrained outputs stay inside [0, M x L] unclipped
    return model


@pytest.mark.parametrize("name", METHODS)
def test_methods_train_reload_and_act_with_the_right_shapes(name, tmp_path):
    torch.set_num_threads(1)
    over = {**TINY, **TINY_METHOD[name], "max_steps": 8, "log_every": 4, "batch_size": 8}
    cfg = make_config(name, "demo", **over)
    train(cfg, _data(name, cfg), tmp_path, method=name, progress=False)
    losses = read_losses(tmp_path)
    assert [r["step"] for r in losses] == [4, 8]
    assert all(np.isfinite(r[k]) for r in losses for k in get_method(name).loss_names)
    model = load_run(tmp_path)
    actor = model.make_actor(seed=0)
    actor.reset(17)  # the agents of an 8- and a 9-node network in one call
    actor.set_team_sizes(np.array([8] * 8 + [9] * 9))
    obs = np.random.default_rng(0).uniform(5, 35, size=(17, 4)).astype(np.float32)
    for _ in range(2):
        a = actor.act(obs, obs)
        assert a.shape == (17,) and a.dtype == np.float64 and np.all((a >= 0) & (a <= RBS))


# Learning the bandit of test_baselines (the best demand is the agent's own o[0]; the data's
# demands carry noise of 2-20 RBs): settings a CPU trains in about 10-30 s, ema from the start
LEARN = {
    "ma-dd": {"max_steps": 400, "inv_hidden": 64},
    "madiff": {"max_steps": 300, "inv_hidden": 64, "batch_size": 32},
    # Diffuser takes its demand from the diffused plan itself: more training, 10 diffusion
    # steps, a wider U-Net and the value's guidance (scale 1, the best of 16 candidates) make it
    # beat the data (about 30 s of CPU; 400 steps, or 8 candidates, do not)
    "ma-diffuser": {"max_steps": 600, "dim": 16, "n_diffusion_steps": 10, "candidates": 16,
                    "guidance_scale": 1.0},
}  # fmt: skip


@pytest.mark.parametrize("name", METHODS)
def test_loss_falls_and_policy_beats_the_data(name, tmp_path):
    """As the RL baselines' test of the same name: each diffusion baseline, trained on the
    bandit, demands closer to the best demand than the data's policy does (and than the data's
    average demand), by at least 1 RB on average, and its diffusion loss falls."""
    torch.set_num_threads(1)
    over = {**TINY, **TINY_METHOD[name], "batch_size": 64, "lr": 1e-3, "warmup_steps": 10}
    over |= {"ema_start": 0, **LEARN[name]}
    over["log_every"] = over["max_steps"] // 4
    cfg = make_config(name, "demo", **over)
    data = _data(name, cfg)
    train(cfg, data, tmp_path, method=name, progress=False)
    losses = read_losses(tmp_path)
    assert losses[-1]["diff"] < 0.85 * losses[0]["diff"], [r["diff"] for r in losses]
    got = policy_reward(load_run(tmp_path), data, agents=64)
    assert got > data.data_reward() + 1.0, (got, data.data_reward())
    assert got > data.avg_action_reward() + 1.0, (got, data.avg_action_reward())


@pytest.mark.parametrize("name", METHODS)
def test_actors_use_only_the_agents_own_observation(name):
    model = _untrained(name)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 30, size=(17, 4)).astype(np.float32)
    mf = rng.uniform(0, 30, size=(17, 4)).astype(np.float32)
    other = obs.copy()
    other[3] += 7.0  # another agent's observation, and every mean field, change
    got, plans = [], []
    for o, f in ((obs, mf), (other, mf + 5.0)):
        actor = model.make_actor(seed=1)
        actor.reset(17)
        actor.set_team_sizes(np.array([8] * 8 + [9] * 9))
        got.append(actor.act(o, f))
        plans.append(actor.last_plan)
    keep = np.arange(17) != 3
    np.testing.assert_allclose(got[0][keep], got[1][keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(plans[0][keep], plans[1][keep], rtol=0, atol=1e-5)
    assert not torch.allclose(plans[0][3], plans[1][3])  # the agent's own plan does move


def test_agent_attention_unet_never_lets_padding_leak():
    torch.manual_seed(0)
    net = AgentAttentionUNet(8, 4, dim=8, dim_mults=(1, 2), groups=4, cond_dim=1, heads=2)
    x = torch.randn(3, 9, 8, 4)
    mask = torch.ones(3, 9)
    mask[0, 8] = 0.0  # an 8-node network beside two 9-node ones
    mask[2, 6:] = 0.0  # and a 6-node one
    k, c, keep = torch.tensor([0, 2, 5]), torch.randn(3, 1), torch.ones(3)
    out = net(x, k, mask, c, keep)
    assert out.shape == x.shape
    x2 = torch.where(mask[..., None, None] > 0, x, 1e3 * torch.randn_like(x))
    out2 = net(x2, k, mask, c, keep)
    real = mask > 0
    torch.testing.assert_close(out2[real], out[real], rtol=1e-5, atol=1e-5)
    # the agents do interact: a real agent's change moves the other real agents' outputs
    x3 = x.clone()
    x3[1, 0] += 1.0
    assert not torch.allclose(net(x3, k, mask, c, keep)[1, 1:], out[1, 1:])
    # each sample alone gives the same output as in the mixed batch
    torch.testing.assert_close(net(x[:1], k[:1], mask[:1], c[:1], keep[:1])[0, :8], out[0, :8],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_madiff_loss_mixes_network_sizes_and_ignores_padding():
    model = _untrained("madiff").train()
    data = JointBanditWindows(model.cfg.horizon, model.cfg.gamma)
    batch = data.joint(16, torch.Generator().manual_seed(3), junk_seed=0)
    assert set(batch["jmask"].sum(1).tolist()) == {8.0, 9.0}  # both sizes in one batch
    other = data.joint(16, torch.Generator().manual_seed(3), junk_seed=1)
    assert not torch.equal(batch["jx"], other["jx"])  # only the padded junk differs
    a = model.loss(batch, torch.Generator().manual_seed(0))
    b = model.loss(other, torch.Generator().manual_seed(0))
    for key in model.loss_names:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)
    assert torch.isfinite(a["loss"])


def test_configs_are_validated():
    with pytest.raises(ValueError, match="condition_dropout"):
        make_config("ma-dd", "demo", condition_dropout=1.0)
    with pytest.raises(ValueError, match="candidates"):
        make_config("ma-diffuser", "demo", candidates=0)
    with pytest.raises(ValueError, match="heads"):
        make_config("madiff", "demo", heads=3)
    with pytest.raises(ValueError, match="horizon"):
        make_config("ma-dd", "demo", horizon=12)
    for name in METHODS:
        assert {"demo", "paper"} <= set(get_method(name).presets)
    with pytest.raises(ValueError, match="steps"):
        _untrained("ma-dd").make_actor(solver="ddpm", steps=3)


# ---- joint windows from a dataset file, and the run folders as policies ----------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("diffusers") / "d.h5"
    args = ["collect", "--out", str(path), "--trajectories", "3", "--frames", "40"]
    assert main([*args, "--scenarios", "n8-2to6,n9-2to7", "--quiet"]) == 0
    return path


def test_joint_windows_hold_every_agent_of_the_network(dataset):
    from macdmp.data.windows import JOINT_KEYS, open_windows

    ds = open_windows(dataset, 8, 0.9)
    assert ds.n_agents_max == 9 and np.isfinite(ds.stats["ret_best"])
    index = np.random.default_rng(0).integers(0, ds.n_windows, 200)
    index[:2] = [0, ds.n_windows - 1]
    want = ds.get(index, joint=True)
    got = ds.torch_sampler("cpu", ("x", "act", "y", *JOINT_KEYS)).get(torch.as_tensor(index))
    for key in JOINT_KEYS:
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=1e-5, atol=1e-4)
    rows = np.arange(200)
    # the drawn agent's own window is its slot of the joint window
    np.testing.assert_array_equal(want["jx"][rows, want["jself"]], want["x"])
    np.testing.assert_array_equal(want["jact"][rows, want["jself"]], want["act"])
    np.testing.assert_allclose(want["jy"][rows, want["jself"]], want["y"], rtol=1e-5, atol=1e-4)
    for b, w in enumerate(index):
        name, _, _, _ = ds.locate(int(w))
        n = 8 if name.startswith("n8") else 9
        assert want["jmask"][b].tolist() == [1.0] * n + [0.0] * (9 - n)
        assert not want["jx"][b, n:].any()  # padded: zeros


SETS = {"ma-diffuser": ["candidates=2"], "ma-dd": [], "madiff": ["batch_size=4"]}


@pytest.mark.parametrize("name", METHODS)
def test_run_folders_train_on_a_dataset_and_evaluate(name, dataset, tmp_path):
    from macdmp.policies.episodes import run_groups
    from macdmp.sim.config import load_scenario

    run = tmp_path / name
    args = ["train", "--method", name, "--data", str(dataset), "--out", str(run), "--quiet"]
    sets = ["--set", "max_steps=4", "log_every=2", "batch_size=8", "dim=8", "groups=4",
            "n_diffusion_steps=6", *SETS[name]]  # fmt: skip
    assert main([*args, *sets]) == 0
    pol = load_policy(str(run))
    assert isinstance(pol, RunPolicy) and pol.decentralized and pol.name == name
    groups = [(load_scenario("n8-2to6"), [11]), (load_scenario("n9-2to7"), [12, 13])]
    res = run_groups(groups, pol, frames=3)
    assert all(np.isfinite(r.avg_reward).all() for r in res)
    if name == "madiff":  # the evaluator told every agent its network's size
        assert sorted(set(pol.actor.sizes.tolist())) == [8, 9]
