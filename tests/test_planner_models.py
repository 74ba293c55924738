"""The three MA-CDMP models, the normaliser, the configuration and batched planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdmp.methods.config import build_config
from macdmp.methods.learners import Normalizer
from macdmp.planner import PlannerConfig, PlannerModels, make_config, plan
from macdmp.planner.models import STEER_CHANGES
from macdmp.planner.policy import PlannerActor
from macdmp.planner.synthetic import SyntheticWindows

TINY = {"horizon": 8, "dim": 8, "groups": 4, "n_diffusion_steps": 10, "inv_hidden": 32}


def tiny_models(**kw) -> tuple[PlannerModels, SyntheticWindows]:
    cfg = make_config("demo", **{**TINY, **kw})
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    return PlannerModels(cfg, data.stats, data.rbs).eval(), data


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"horizon": 12}, "horizon"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"groups": 3}, "groups"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"gamma": 0.0}, "gamma"),
        ({"n_diffusion_steps": 1}, "n_diffusion_steps"),
        ({"warm": 1.5}, "warm"),
    ],
)
def test_config_errors_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        make_config("demo", **overrides)


def test_presets_and_unknown_keys() -> None:
    paper = make_config("paper")
    assert paper.n_diffusion_steps == 100 and paper.total_steps == 100_000
    assert paper.batch_size == 64 and paper.horizon == 16 and paper.gamma == 0.99
    with pytest.raises(ValueError, match="preset"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown keys"):
        PlannerConfig.from_dict({"width": 3})
    cfg = make_config("demo", dim_mults=[1, 2, 2, 4])
    assert PlannerConfig.from_dict(cfg.to_dict()) == cfg
    # the guidance study's variant: the paper's models, another return, CFG, warm starts
    steer = make_config("paper-steer")
    assert steer.replace(reward="delay", guidance="classifier", warm=0.0) == paper
    assert (steer.reward, steer.guidance, steer.warm) == ("own+neighbours-backlog", "cfg", 0.15)
    assert make_config("fast-steer") == make_config("fast", **STEER_CHANGES)
    # the adaptive study's preset: paper-steer, the prior learnt from the best returns, f_phi
    # reading m_t; its w/o MF twin leaves out what reads the mean field, f_phi's input included
    top = make_config("top-steer")
    assert top == steer.replace(filtered=True, inv_mf="now")
    twin = build_config("ma-cdmp", "top-steer", no_mf=True)
    assert twin == top.replace(use_mf=False, inv_mf="none")
    with pytest.raises(ValueError, match="--set inv_mf='now': --no-mf sets inv_mf='none'"):
        build_config("ma-cdmp", "top-steer", no_mf=True, sets=["inv_mf=now"])
    with pytest.raises(ValueError, match="inv_mf: .*'none' when use_mf is False"):
        make_config("top-steer", use_mf=False)
    assert steer == make_config("paper", **STEER_CHANGES)
    # a run folder saved before the field existed loads with warm = 0 (no warm start)
    old = {k: v for k, v in paper.to_dict().items() if k != "warm"}
    assert PlannerConfig.from_dict(old).warm == 0.0


def test_actor_takes_the_runs_warm_default() -> None:
    """The config's ``warm`` is the actor's default; an option overrides it; DDPM has none."""
    m, _ = tiny_models(warm=0.3)
    assert m.make_actor().warm == 0.3
    assert m.make_actor(warm=0.0).warm == 0.0
    assert m.make_actor(solver="ddpm").warm == 0.0
    with pytest.raises(ValueError, match="warm"):
        m.make_actor(solver="ddpm", warm=0.3)
    assert tiny_models()[0].make_actor().warm == 0.0


@pytest.mark.parametrize("use_mf, channels", [(True, 8), (False, 4)])
def test_model_shapes(use_mf: bool, channels: int) -> None:
    m, data = tiny_models(use_mf=use_mf)
    assert m.cfg.channels == channels
    b = 5
    x = torch.randn(b, 8, channels)
    k = torch.randint(0, 10, (b,))
    assert m.eps(x, k).shape == (b, 8, channels)
    assert m.classifier(x, k).shape == (b,)
    o = torch.randn(b, 4)
    a = m.action_rbs(o, o + 1)
    assert a.shape == (b,) and (a >= 0).all() and (a <= data.rbs).all()


def test_one_parameter_set_serves_every_agent() -> None:
    """Agents are batch rows: each row's output depends only on that row (no agent index)."""
    m, _ = tiny_models()
    x = torch.randn(9, 8, 8)
    k = torch.full((9,), 3)
    with torch.no_grad():
        batched_eps, batched_j = m.eps(x, k), m.classifier(x, k)
        for i in range(9):
            assert torch.allclose(m.eps(x[i : i + 1], k[:1])[0], batched_eps[i], atol=1e-5)
            assert torch.allclose(m.classifier(x[i : i + 1], k[:1])[0], batched_j[i], atol=1e-5)
    n_params = sum(p.numel() for p in m.parameters())
    for agents in (9, 100):
        obs = np.abs(np.random.default_rng(0).normal(20, 5, (agents, 4))).astype(np.float32)
        acts, plans = plan(m, obs, obs, "dpm1", 3, 0.0, 1, torch.Generator().manual_seed(0))
        assert acts.shape == (agents,) and plans.shape == (agents, 8, 8)
    assert sum(p.numel() for p in m.parameters()) == n_params


def test_normalizer_round_trip_and_errors() -> None:
    _, data = tiny_models()
    n = Normalizer(data.stats, 4)
    o = torch.randn(3, 4) * 10 + 20
    assert torch.allclose(n.unobs(n.obs(o)), o, atol=1e-4)
    assert torch.allclose(n.unret(n.ret(torch.tensor(-50.0))), torch.tensor(-50.0))
    bad = dict(data.stats)
    del bad["ret_std"]
    with pytest.raises(ValueError, match="ret_std"):
        Normalizer(bad, 4)


@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm1", 5), ("dpm2", 5)])
def test_plan_pins_current_observation(solver: str, steps) -> None:
    m, data = tiny_models()
    w = data.sample(6, np.random.default_rng(1))
    obs, mf = w["x"][:, 0], w["xbar"][:, 0]
    acts, plans = plan(m, obs, mf, solver, steps, 0.1, 3, torch.Generator().manual_seed(0))
    assert np.allclose(plans[:, 0, :4], obs, atol=1e-3)
    assert np.allclose(plans[:, 0, 4:], mf, atol=1e-3)
    assert acts.dtype == np.float64 and ((acts >= 0) & (acts <= data.rbs)).all()


def test_no_mf_plan_ignores_the_mean_field() -> None:
    m, data = tiny_models(use_mf=False)
    w = data.sample(4, np.random.default_rng(2))
    a1, p1 = plan(
        m, w["x"][:, 0], w["xbar"][:, 0], "dpm2", 4, 0.1, 2, torch.Generator().manual_seed(3)
    )
    a2, p2 = plan(m, w["x"][:, 0], None, "dpm2", 4, 0.1, 2, torch.Generator().manual_seed(3))
    assert p1.shape == (4, 8, 4)
    assert np.array_equal(a1, a2) and np.array_equal(p1, p2)


def test_plan_validates_inputs() -> None:
    m, _ = tiny_models()
    obs = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="mean_field"):
        plan(m, obs, None)
    with pytest.raises(ValueError, match="obs"):
        plan(m, np.zeros((3, 5), np.float32), obs)
    with pytest.raises(ValueError, match="candidates: must be >= 1"):
        plan(m, obs, obs, n_candidates=0)
    with pytest.raises(ValueError, match="steps"):
        plan(m, obs, obs, solver="ddpm", steps=5)


@pytest.mark.parametrize(
    ("backend", "package"),
    [("onnx", "onnxruntime"), ("fused", "onnxruntime"), ("openvino", "openvino")],
)
def test_a_backend_without_its_package_is_refused_when_the_actor_is_built(
    monkeypatch, backend, package
) -> None:
    """Where a backend's runtime is not installed (the GPU image has neither), building the
    actor fails at once with the package to install, not at its first decision."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    m, _ = tiny_models()
    with pytest.raises(ValueError, match=rf"^backend: '{backend}' needs the {package} package"):
        PlannerActor(m, backend=backend)
    PlannerActor(m)  # torch needs neither


def test_inverse_dynamics_reads_the_mean_field_inv_mf_names() -> None:
    """``inv_mf``: f_phi also reads the mean field at t ("now") or at t and t+1 ("both"), in the
    loss and in planning; with "none" (the paper's f_phi, the default, left out of a run's
    params) the mean field does not reach the action of a given plan."""
    assert "inv_mf" not in make_config("paper").to_dict()
    for bad in ({"inv_mf": "next"}, {"use_mf": False, "inv_mf": "now"}):
        with pytest.raises(ValueError, match="^inv_mf: "):
            make_config("demo", **bad)
    batch = {
        k: torch.as_tensor(v)
        for k, v in SyntheticWindows(8, 0.99).sample(16, np.random.default_rng(0)).items()
    }
    shifted = {"now": batch["xbar"] + 5.0, "next": batch["xbar"].clone()}
    shifted["next"][:, 1:] += 5.0  # the mean field of every frame but the first
    obs = torch.full((3, 4), 10.0)
    plan_mf = torch.full((3, 8, 4), 12.0)
    for inv_mf, frames in (("none", 2), ("now", 3), ("both", 4)):
        m, _ = tiny_models(inv_mf=inv_mf)
        assert m.invdyn.net[0].in_features == 4 * frames
        gen = torch.Generator()
        base = m.loss(batch, gen.manual_seed(0))["inv"]
        read = {
            k for k, xbar in shifted.items()
            if not torch.equal(m.loss(dict(batch, xbar=xbar), gen.manual_seed(0))["inv"], base)
        }  # fmt: skip
        # the loss of "now" reads m_t of each transition, so a shift from the second frame on
        # reaches it too; "both" reads every frame; "none" none
        assert read == ({"now", "next"} if inv_mf != "none" else set())
        z = m.to_model_space(torch.full((3, 8, 4), 12.0), plan_mf)
        acts = {k: m.plan_action(obs, mf, z) for k, mf in (("a", obs), ("b", obs + 5.0))}
        assert torch.equal(acts["a"], acts["b"]) == (inv_mf == "none")  # the measured m_t
        z2 = m.to_model_space(torch.full((3, 8, 4), 12.0), plan_mf + 5.0)
        assert torch.equal(m.plan_action(obs, obs, z2), acts["a"]) == (inv_mf != "both")  # m_t+1
    with pytest.raises(ValueError, match="inv_mf"):
        m.action_rbs(obs, obs)


def test_filtered_noise_loss_learns_from_the_best_windows_only() -> None:
    """``filtered``: the noise loss (the plans' prior) is the mean over the windows whose
    trajectory's return reaches the data's ``rtg_start_best``; the return model and the inverse
    dynamics still learn from every window. Off by default and left out of a run's params."""
    assert "filtered" not in make_config("paper").to_dict()
    assert "rtg0" not in PlannerModels.batch_keys(make_config("demo"))
    assert "rtg0" in PlannerModels.batch_keys(make_config("demo", filtered=True))
    data = SyntheticWindows(8, 0.99)
    stats = {**data.stats, "rtg_start_best": np.float32(-10.0)}
    models = {}
    for filtered in (False, True):
        torch.manual_seed(0)  # the same weights
        cfg = make_config("demo", **TINY, filtered=filtered)
        models[filtered] = PlannerModels(cfg, stats, data.rbs).eval()
    batch = {k: torch.as_tensor(v) for k, v in data.sample(16, np.random.default_rng(0)).items()}
    best = torch.arange(16) < 4  # the first four windows come from the best trajectories
    batch["rtg0"] = torch.where(best, -5.0, -20.0)
    gen = torch.Generator()

    def losses(model, **changes):
        return model.loss(dict(batch, **changes), gen.manual_seed(0))

    base = losses(models[True])
    plain = losses(models[False])
    assert torch.equal(base["cls"], plain["cls"]) and torch.equal(base["inv"], plain["inv"])
    assert not torch.allclose(base["diff"], plain["diff"])
    kept_all = losses(models[True], rtg0=torch.zeros(16))
    assert torch.allclose(kept_all["diff"], plain["diff"])
    assert losses(models[True], rtg0=torch.full((16,), -20.0))["diff"] == 0.0
    # a window of a worse trajectory reaches the return and inverse losses, not the noise loss
    for rows, reaches_diff in ((~best, False), (best, True)):
        x = batch["x"].clone()
        x[rows] += 3.0
        moved = losses(models[True], x=x)
        assert torch.equal(moved["diff"], base["diff"]) != reaches_diff
        assert not torch.equal(moved["cls"], base["cls"])


def test_history_pins_the_past_and_acts_on_the_current_frame() -> None:
    """``history`` = k: a plan pins o_t-k .. o_t (own and mean field; the current ones repeated
    when no past is given), the action is f_phi(o_t, the plan's o_t+1) at window positions k
    and k + 1. Off by default and left out of a run's params; bad values named."""
    from macdmp.planner.plan import plan_batch

    assert "history" not in make_config("paper").to_dict()
    for bad in (-1, 7, True, 1.5):  # TINY's horizon is 8: history at most 6
        with pytest.raises(ValueError, match="^history: "):
            make_config("demo", **TINY, history=bad)
    m, data = tiny_models(history=2)
    w = data.sample(5, np.random.default_rng(4))
    past, obs = w["x"][:, :2], w["x"][:, 2]
    past_mf, mf = w["xbar"][:, :2], w["xbar"][:, 2]
    gen = torch.Generator()
    for solver, steps in (("ddpm", None), ("dpm2", 4)):
        acts, z = plan_batch(
            m, obs, mf, solver, steps, generator=gen.manual_seed(0), past=past, past_mf=past_mf
        )
        own, plan_mf = (v.numpy() for v in m.from_model_space(z))
        assert np.allclose(own[:, :3], w["x"][:, :3], atol=1e-3)
        assert np.allclose(plan_mf[:, :3], w["xbar"][:, :3], atol=1e-3)
        o = torch.as_tensor(obs)
        want = m.action_rbs(o, torch.as_tensor(own[:, 3]))
        assert torch.allclose(acts, want, atol=1e-4)
        assert not torch.allclose(acts, m.action_rbs(o, torch.as_tensor(own[:, 1])))
    _, z = plan_batch(m, obs, mf, "dpm2", 4, generator=gen.manual_seed(0))
    own = m.from_model_space(z)[0].numpy()
    assert np.allclose(own[:, :3], obs[:, None].repeat(3, 1), atol=1e-3)  # no past: repeated
    with pytest.raises(ValueError, match=r"^past: expected shape \(5, 2, 4\)"):
        plan_batch(m, obs, mf, past=past[:, :1], past_mf=past_mf)
    with pytest.raises(ValueError, match="^backend: 'fused'"):
        PlannerActor(m, backend="fused")
    m0, _ = tiny_models()
    with pytest.raises(ValueError, match="^past: "):
        plan_batch(m0, obs, mf, past=past)


def test_inv_past_lets_the_inverse_dynamics_read_the_pinned_past() -> None:
    """``inv_past`` (with ``history`` = k): f_phi reads o_t-k .. o_t-1 besides (o_t, o_t+1) and
    what ``inv_mf`` names; a plan's action takes that past from the plan's pinned frames, and
    the loss trains f_phi on the window's transitions from position k on, each with the k
    frames before it. Off by default, left out of a run's params, refused without history."""
    assert "inv_past" not in make_config("paper").to_dict()
    for bad in ({"inv_past": True}, {"inv_past": 1, "history": 2}):
        with pytest.raises(ValueError, match="^inv_past: "):
            make_config("demo", **TINY, **bad)
    m, data = tiny_models(history=2, inv_past=True, inv_mf="now")
    assert m.invdyn.net[0].in_features == 4 * (2 + 1 + 1 + 1)  # o_t-2, o_t-1, o_t, m_t, o_t+1
    w = {k: torch.as_tensor(v) for k, v in data.sample(5, np.random.default_rng(6)).items()}
    x, xbar = w["x"], w["xbar"]
    o, nxt, mf = x[:, 2], x[:, 3], xbar[:, 2]
    with torch.no_grad():
        a = m.action_rbs(o, nxt, mf, past=x[:, :2])
        assert not torch.allclose(a, m.action_rbs(o, nxt, mf, past=x[:, :2] + 3.0))
        with pytest.raises(ValueError, match=r"^past: expected shape \(5, 2, 4\)"):
            m.action_rbs(o, nxt, mf)
        # a plan's action reads the plan's pinned past (here the data's window itself)
        z = m.to_model_space(x, xbar)
        torch.testing.assert_close(m.plan_action(o, mf, z), a, rtol=0, atol=1e-4)
        n = m.normalizer
        per_t = [
            (
                m.invdyn(*m.inv_inputs(*(n.obs(x[:, t]), n.obs(x[:, t + 1])), n.mf(xbar[:, t]),
                                       None, n.obs(x[:, t - 2 : t])))
                - n.act(w["act"][:, t])
            ).pow(2).mean()
            for t in range(2, 7)  # t = k .. H - 2
        ]  # fmt: skip
        inv = m.loss(w, torch.Generator().manual_seed(0))["inv"]
    torch.testing.assert_close(inv, torch.stack(per_t).mean(), rtol=1e-6, atol=0)
    actor = PlannerActor(m, seed=1, steps=4)
    actor.reset(5)
    for t in range(3):
        acts = actor.act(w["x"][:, t].numpy(), w["xbar"][:, t].numpy())
        assert acts.shape == (5,) and np.all((acts >= 0) & (acts <= m.rbs))


def test_history_noise_loss_leaves_the_pinned_frames_out() -> None:
    """With ``history`` = k the noise loss is over window positions k + 1 on: with a noise model
    that predicts 0 it is the mean square of the drawn noise there."""
    batch = {
        k: torch.as_tensor(v)
        for k, v in SyntheticWindows(8, 0.99).sample(16, np.random.default_rng(0)).items()
    }

    class Zero(torch.nn.Module):
        def forward(self, x, k, *rest):  # type: ignore[no-untyped-def]
            return torch.zeros_like(x)

    gen = torch.Generator()
    for k in (0, 2):
        m, _ = tiny_models(history=k)
        m.eps = Zero()
        diff = m.loss(batch, gen.manual_seed(7))["diff"]
        gen.manual_seed(7)
        torch.randint(0, m.cfg.n_diffusion_steps, (16,), generator=gen)  # the noise levels
        noise = torch.randn((16, 8, m.cfg.channels), generator=gen)
        assert torch.allclose(diff, noise[:, k + 1 :].pow(2).mean())


def test_actor_keeps_each_agents_last_frames_for_history() -> None:
    """The actor of a ``history`` = 2 model pins, each frame, the agent's two observations and
    mean fields before it (at an episode's start its first one repeated); reset forgets them."""
    m, data = tiny_models(history=2)
    w = data.sample(3, np.random.default_rng(5))
    actor = PlannerActor(m, seed=1, steps=4, warm=0.3)  # warm: the actor keeps its plans
    for episode in range(2):
        actor.reset(3)
        for t in range(4):
            actor.act(w["x"][:, t], w["xbar"][:, t])
            own, plan_mf = (v.numpy() for v in m.from_model_space(actor._prev))
            seen = [max(t - 2 + i, 0) for i in range(3)]  # o_t-2, o_t-1, o_t; none before 0
            assert np.allclose(own[:, :3], w["x"][:, seen], atol=1e-3), (episode, t)
            assert np.allclose(plan_mf[:, :3], w["xbar"][:, seen], atol=1e-3), (episode, t)
    assert "history 2" in actor.label and actor.describe()["history"] == 2
    m, _ = tiny_models(history=1, use_mf=False)  # w/o MF: the own past alone
    actor = PlannerActor(m, seed=1, steps=4, warm=0.3)
    actor.reset(3)
    for t in range(2):
        actor.act(w["x"][:, t], w["xbar"][:, t])
    own = m.from_model_space(actor._prev)[0].numpy()
    assert actor._prev.shape[-1] == 4 and np.allclose(own[:, :2], w["x"][:, :2], atol=1e-3)
