"""Classifier-free guidance on the return as MA-CDMP's option beside classifier guidance:
the config fields, the conditioned training loss, the checkpoint, the actor and its plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdmp.methods import Trainer
from macdmp.methods.checkpoint import load_run
from macdmp.methods.policy import RunPolicy
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.plan import plan_batch
from macdmp.planner.synthetic import SyntheticWindows
from macdmp.policies import PolicyError

TINY = {"horizon": 8, "dim": 8, "groups": 4, "n_diffusion_steps": 10, "inv_hidden": 32}
STEPS = {"n_epochs": 1, "steps_per_epoch": 6, "log_every": 3, "ckpt_every": 6,
         "warmup_steps": 1, "ema_start": 0, "batch_size": 16}  # fmt: skip


def tiny(**kw) -> tuple[PlannerModels, SyntheticWindows]:
    cfg = make_config("demo", **{**TINY, **kw})
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    return PlannerModels(cfg, data.stats, data.rbs).eval().requires_grad_(False), data


@pytest.mark.parametrize(
    "overrides, field",
    [({"guidance": "free"}, "guidance"), ({"guidance": "cfg", "cond_dropout": 1.0}, "cond_dropout"),
     ({"cond_dropout": -0.1}, "cond_dropout")],
)  # fmt: skip
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        make_config("demo", **overrides)


def test_the_default_keeps_the_classifier_layout_and_cfg_adds_the_condition():
    paper, _ = tiny()
    cfg, _ = tiny(guidance="cfg")
    assert paper.cfg.guidance == "classifier" and cfg.cfg.cond_dropout == 0.25
    keys, cfg_keys = set(paper.state_dict()), set(cfg.state_dict())
    assert not any(".cond." in k for k in keys)
    extra = cfg_keys - keys
    assert extra and all(k.startswith("eps.embed.cond.") for k in extra)
    assert keys <= cfg_keys


def test_cfg_trains_and_round_trips_through_the_checkpoint(tmp_path):
    cfg = make_config("demo", **TINY, **STEPS, guidance="cfg", cond_dropout=0.5)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    tr = Trainer("ma-cdmp", cfg, data, tmp_path / "run", "cpu")
    tr.run(progress=False)
    assert tr.step == 6 and torch.isfinite(tr.acc).all()
    m = load_run(tmp_path / "run", "cpu")
    assert m.cfg == cfg and m.cfg.guidance == "cfg" and m.cfg.cond_dropout == 0.5
    assert m.eps.embed.cond_dim == 1
    pol = RunPolicy.from_spec(f"{tmp_path / 'run'},guidance=cfg,cfg=1.5,target=-40,steps=3")
    assert pol.actor.describe()["target"] == -40.0 and pol.actor.cfg == 1.5
    with pytest.raises(PolicyError, match="guidance"):
        RunPolicy.from_spec(f"{tmp_path / 'run'},guidance=free")
    # the loss is a function of the trainer's generator alone: same draws, same loss
    batch = data.sample(16, np.random.default_rng(0))
    batch = {k: torch.as_tensor(v) for k, v in batch.items()}
    losses = [m.loss(batch, torch.Generator().manual_seed(3))["diff"] for _ in range(2)]
    assert losses[0] == losses[1]
    # the condition reaches the loss: a batch whose returns are moved gives another loss
    moved = {**batch, "y": batch["y"] + 5 * float(data.stats["ret_std"])}
    assert m.loss(moved, torch.Generator().manual_seed(3))["diff"] != losses[0]


def test_the_cfg_actor_acts_and_describes_itself():
    m, data = tiny(guidance="cfg")
    actor = m.make_actor(seed=1)
    assert actor.guidance == "cfg" and actor.cfg == 1.2
    assert actor.describe()["target"] == pytest.approx(m.default_target)
    assert ", cfg" in actor.label
    obs = np.random.default_rng(0).uniform(5, 35, (7, 4)).astype(np.float32)
    actor.reset(7)
    a = actor.act(obs, obs)
    assert a.shape == (7,) and a.dtype == np.float64 and np.all((a >= 0) & (a <= data.rbs))
    other = m.make_actor(seed=1, guidance="classifier", guide=0.3)
    assert other.describe()["target"] is None and other.describe()["guide"] == 0.3
    other.reset(7)
    assert other.act(obs, obs).shape == (7,)
    t = m.make_actor(seed=1, target=-10.0, cfg=2.0)
    assert t.describe()["target"] == -10.0 and "target -10" in t.label and "cfg 2" in t.label


def _plans(m, obs, **kw):
    gen = torch.Generator().manual_seed(4)
    return plan_batch(m, obs, obs, "dpm2", 4, generator=gen, cuda_graph=False, **kw)[1]


def test_weight_and_target_steer_the_plan_with_the_same_noise():
    m, _ = tiny(guidance="cfg")
    obs = np.random.default_rng(1).uniform(5, 35, (5, 4)).astype(np.float32)
    lo, hi = m.default_target - 50.0, m.default_target + 50.0
    # w = 0 is the unconditional model: the target does not matter
    w0 = _plans(m, obs, guidance="cfg", cfg=0.0, target=lo)
    torch.testing.assert_close(w0, _plans(m, obs, guidance="cfg", cfg=0.0, target=hi))
    # ... and it is what classifier guidance at scale 0 samples on a cfg-trained model
    torch.testing.assert_close(w0, _plans(m, obs, guidance="classifier", guide=0.0))
    w2 = _plans(m, obs, guidance="cfg", cfg=2.0, target=hi)
    assert (w2 - w0)[:, 1:].abs().max() > 1e-4
    assert (w2 - _plans(m, obs, guidance="cfg", cfg=2.0, target=lo)).abs().max() > 1e-4
    torch.testing.assert_close(w2[:, 0], w0[:, 0])  # the current observation stays pinned


def _trend_windows(b: int, rng: np.random.Generator, h: int = 8) -> dict[str, np.ndarray]:
    """Windows that start at 20 and rise or fall by 10 over the horizon (half each); the
    return is the sum of the first dimension, so only the condition tells the two apart."""
    s = rng.choice([-1.0, 1.0], size=(b, 1, 1))
    x = 20 + 10 * s * np.linspace(0, 1, h)[None, :, None] + 0.5 * rng.standard_normal((b, h, 4))
    x[:, 0] = 20 + 0.5 * rng.standard_normal((b, 4))
    f = np.float32
    return {"x": x.astype(f), "act": np.full((b, h), 20, f), "y": x[..., 0].sum(1).astype(f)}


def test_a_trained_toy_plans_towards_a_higher_target():
    """Trained briefly on rising and falling windows, a plan conditioned on a return one std
    above the mean rises further with a larger weight, one below it falls (same noise)."""
    d = _trend_windows(5000, np.random.default_rng(123))
    f = np.float32
    stats = {"obs_mean": d["x"].reshape(-1, 4).mean(0), "obs_std": d["x"].reshape(-1, 4).std(0),
             "mf_mean": np.zeros(4, f), "mf_std": np.ones(4, f), "act_mean": f(20),
             "act_std": f(1), "ret_mean": f(d["y"].mean()), "ret_std": f(d["y"].std())}  # fmt: skip
    cfg = make_config("demo", **TINY, use_mf=False, guidance="cfg")
    torch.manual_seed(1)
    m = PlannerModels(cfg, stats, 40.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    rng, gen = np.random.default_rng(1), torch.Generator().manual_seed(1)
    for _ in range(100):
        opt.zero_grad()
        batch = {k: torch.as_tensor(v) for k, v in _trend_windows(32, rng).items()}
        m.loss(batch, gen)["loss"].backward()
        opt.step()
    m.eval().requires_grad_(False)
    o = np.full((16, 4), 20, np.float32)
    end = {}
    for t, w in ((1, 2.0), (1, 0.0), (-1, 2.0)):
        y = float(stats["ret_mean"] + t * stats["ret_std"])
        gen = torch.Generator().manual_seed(4)
        _, z = plan_batch(m, o, None, "dpm2", 5, generator=gen, cuda_graph=False, target=y, cfg=w)
        end[t, w] = float(m.from_model_space(z)[0][:, -1, 0].mean())
    assert end[1, 2.0] > end[1, 0.0] + 1.0 and end[1, 0.0] > end[-1, 2.0] + 1.0


def test_cfg_options_are_refused_where_they_cannot_work():
    paper, _ = tiny()
    with pytest.raises(ValueError, match="^guidance: 'cfg' needs"):
        paper.make_actor(guidance="cfg")
    with pytest.raises(ValueError, match="^guidance: must be one of"):
        paper.make_actor(guidance="both")
    with pytest.raises(ValueError, match="^target: "):
        paper.make_actor(target=-5.0)
    obs = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="^guidance: 'cfg' needs"):
        plan_batch(paper, obs, obs, guidance="cfg")
    m, _ = tiny(guidance="cfg")
    with pytest.raises(ValueError, match="^target: "):
        m.make_actor(target=float("nan"))
