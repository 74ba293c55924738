"""Several runs of one method acting as one (macdmp.methods.joint): each run's rows go through
its own weights, the rows keep their order through the planner, and a stacked group's in-loop
validation runs jointly with each run recording its own result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_selection import dataset  # noqa: F401  (a fixture: a small collected dataset)
from test_stacked import one_thread  # noqa: F401  (a fixture: one torch thread)

from macdmp.data.windows import open_windows
from macdmp.methods import read_evals
from macdmp.methods.base import make_config as method_config
from macdmp.methods.checkpoint import BEST_NAME, read_checkpoint
from macdmp.methods.joint import JointModel, why_not_joint
from macdmp.methods.stacked import StackedTrainer
from macdmp.methods.trainer import Trainer
from macdmp.planner import make_config
from macdmp.planner.models import PlannerModels
from macdmp.planner.plan import plan_batch
from macdmp.planner.synthetic import SyntheticWindows

TINY = {"horizon": 8, "dim": 8, "groups": 4, "n_diffusion_steps": 10, "inv_hidden": 32}


def models(k: int, guidance: str = "cfg", same: bool = False) -> list[PlannerModels]:
    """K tiny MA-CDMP modules on one dataset's statistics, of other weights (or the same)."""
    cfg = make_config("demo", guidance=guidance, **TINY)
    data = SyntheticWindows(cfg.horizon, seed=0)
    out = []
    for i in range(k):
        torch.manual_seed(0 if same else i + 1)
        out.append(PlannerModels(cfg, data.stats, rbs=data.rbs).eval())
    return out


def test_each_runs_rows_go_through_its_own_weights():
    ms = models(3)
    joint = JointModel(ms).model
    k, a = 3, 5
    h, c = ms[0].cfg.horizon, ms[0].cfg.channels
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k * a, h, c, generator=g)
    idx = torch.randint(0, 10, (k * a,), generator=g)
    y = torch.randn(k * a, 1, generator=g)
    keep = (torch.rand(k * a, generator=g) > 0.5).float()
    o, o2 = torch.randn(k * a, 4, generator=g), torch.randn(k * a, 4, generator=g)
    with torch.no_grad():
        outs = (joint.eps(x, idx, y, keep), joint.classifier(x, idx), joint.invdyn(o, o2))
        for r, m in enumerate(ms):
            s = slice(r * a, (r + 1) * a)
            want = (m.eps(x[s], idx[s], y[s], keep[s]), m.classifier(x[s], idx[s]))
            want += (m.invdyn(o[s], o2[s]),)
            for got, w in zip(outs, want, strict=True):
                torch.testing.assert_close(got[s], w, rtol=1e-5, atol=1e-6)
    # the gradient the classifier guidance takes flows per run as well
    xg = x.clone().requires_grad_(True)
    (g_joint,) = torch.autograd.grad(joint.classifier(xg, idx).sum(), xg)
    for r, m in enumerate(ms):
        s = slice(r * a, (r + 1) * a)
        xr = x[s].clone().requires_grad_(True)
        (g_r,) = torch.autograd.grad(m.classifier(xr, idx[s]).sum(), xr)
        torch.testing.assert_close(g_joint[s], g_r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"guidance": "cfg", "cfg": 1.2},  # the two halves of classifier-free guidance
        {"guidance": "classifier", "guide": 0.1, "n_candidates": 3},  # gradients, candidates
    ],
    ids=["cfg", "classifier-candidates"],
)
def test_every_call_of_a_joint_plan_gives_each_run_its_own_agents(options, monkeypatch):
    """Rows keep their order through the whole planning call (warm starts included): in every
    call of a joint child, block k of the rows holds run k's agents only (each row's pinned
    first observation, or its observation for the inverse dynamics, is one of run k's)."""
    import macdmp.methods.joint as joint_module

    ms = models(2, guidance="cfg")
    joint = JointModel(ms).model
    k, a = 2, 6
    rng = np.random.default_rng(0)
    # run 0's agents have backlogs in [0, 10), run 1's in [20, 30): a row tells its run
    obs = np.concatenate([rng.uniform(0, 10, (a, 4)), rng.uniform(20, 30, (a, 4))])
    mf = rng.uniform(0, 20, (k * a, 4))
    first = ms[0].to_model_space(
        torch.tensor(obs[:, None], dtype=torch.float32),
        torch.tensor(mf[:, None], dtype=torch.float32),
    )[:, 0]
    calls: list[tuple[str, torch.Tensor]] = []
    real = joint_module._Vmapped.forward

    def spy(self, *args):
        calls.append((self.name, args[0].detach()))
        return real(self, *args)

    monkeypatch.setattr(joint_module._Vmapped, "forward", spy)
    gen = torch.Generator().manual_seed(7)
    _, z = plan_batch(joint, obs, mf, solver="dpm2", steps=4, generator=gen, **options)
    plan_batch(joint, obs, mf, solver="dpm2", steps=4, generator=gen, warm_from=z, **options)
    called = {"eps", "invdyn"} | ({"classifier"} if options["guidance"] == "classifier" else set())
    assert {n for n, _ in calls} == called
    for name, x in calls:
        rows = x[:, 0] if name != "invdyn" else x  # the pinned first entry / o_t
        want = first if name != "invdyn" else ms[0].normalizer.obs(torch.tensor(obs).float())
        per = len(rows) // k
        for r in range(k):
            block, mine = rows[r * per : (r + 1) * per], want[r * a : (r + 1) * a]
            dist = torch.cdist(block.flatten(1), mine.flatten(1)).min(dim=1).values
            assert float(dist.max()) < 1e-4, (name, r)


def test_runs_that_differ_outside_the_joint_children_cannot_act_as_one():
    ms = models(2)
    assert why_not_joint(ms) is None
    other = SyntheticWindows(8, noise=0.9, seed=5)  # other statistics: another normaliser
    ms.append(PlannerModels(ms[0].cfg, other.stats, rbs=other.rbs))
    reason = why_not_joint(ms)
    assert reason is not None and "normalizer" in reason
    with pytest.raises(ValueError, match="cannot act jointly: normalizer"):
        JointModel(ms)
    # a configuration field the actor reads (not one the trainer applies per run)
    warm = models(2)
    warm[1].cfg = warm[1].cfg.replace(warm=0.3)
    assert why_not_joint(warm) == "config field warm differs (0.0, 0.3)"
    seeds = models(2)
    seeds[1].cfg = seeds[1].cfg.replace(seed=5, lr=1e-3)  # applied per run: may differ
    assert why_not_joint(seeds) is None
    from macdmp.baselines.bc import BehaviourCloning

    cfg = method_config("bc", "demo")
    data = SyntheticWindows(1, seed=0)
    bcs = [BehaviourCloning(cfg, data.stats, data.rbs) for _ in range(2)]
    assert "no joint_modules" in why_not_joint(bcs)
    assert "methods differ" in why_not_joint([ms[0], bcs[0]])


@pytest.mark.parametrize("joint", [True, False], ids=["joint", "one-at-a-time"])
def test_stacked_runs_validate_jointly_each_keeping_its_own_best(dataset, tmp_path, joint):  # noqa: F811
    sets = {
        **TINY,
        "n_epochs": 1,
        "steps_per_epoch": 8,
        "log_every": 4,
        "ckpt_every": 4,
        "eval_every": 4,
        "eval_seeds": 2,
        "eval_frames": 12,
        "batch_size": 8,
        "warmup_steps": 2,
        "ema_start": 2,
    }
    cfg = make_config("demo", **sets)
    data = open_windows(dataset, horizon=cfg.horizon, gamma=cfg.gamma)
    cfgs = [cfg, cfg.replace(seed=1)]
    trs = [Trainer("ma-cdmp", c, data, tmp_path / f"r{k}", "cpu") for k, c in enumerate(cfgs)]
    st = StackedTrainer(trs, joint_eval=joint)
    st.run(progress=False)
    assert st.joint_refused is None
    for tr in trs:
        tr.close()
        evals = read_evals(tr.run_dir)
        assert [e["step"] for e in evals] == [4, 8]
        assert all(np.isfinite(e["loss_aware_delay_ms"]) for e in evals)
        assert all(("eval_runs" in e) == joint for e in evals)
        best = min(evals, key=lambda e: e["loss_aware_delay_ms"])
        chosen = read_checkpoint(tr.run_dir / BEST_NAME)
        assert chosen["step"] == best["step"] and chosen["selected"]["seeds"] == "validation"
