"""Runs of one method trained as one stacked model (macdmp.methods.stacked).

Tolerance of "stacked equals alone": a stacked run draws exactly the batches and noise it draws
alone (its generator ends in the same state, checked bit for bit), and whatever is computed per
run (clipping, Adam, EMA, schedules) is the trainer's own code on the run's own slice; but its
loss runs in batched kernels (a grouped convolution for the runs' convolutions, batched matrix
products), which may add in another order. On the CPU that moves the losses by float32
rounding, about 1e-7 relative (seen: at most 3e-7 over 40 steps, every method): the tests allow
1e-5. Adam turns a rounding difference in a near-zero gradient into a step of up to lr in
another direction, so a few weights differ by a fraction of lr (seen: at most 1.03e-5 after 12
steps at lr 2e-4 to 3e-4): the tests allow 1e-4 absolute, 1/24 of what 12 steps can move a weight
and far inside the seed spread. A resumed stacked run is the uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_baselines import BanditWindows
from test_train import Interrupting

from macdmp.methods import Trainer, TrainingInterrupted, load_run, read_losses, train_packed
from macdmp.methods import stacked as stacked_mod
from macdmp.methods.base import make_config as method_config
from macdmp.methods.flat import FlatUpdate
from macdmp.methods.policy import RunPolicy, load_policy
from macdmp.methods.stacked import (
    NORMS,
    NotStackable,
    StackedTrainer,
    check_stackable,
    clip_stacked,
    train_many,
    train_stacked,
)
from macdmp.planner import make_config
from macdmp.planner.models import PlannerModels
from macdmp.planner.synthetic import SyntheticWindows

TINY = {
    "horizon": 8,
    "dim": 8,
    "groups": 4,
    "n_diffusion_steps": 10,
    "inv_hidden": 32,
    "n_epochs": 1,
    "steps_per_epoch": 12,
    "log_every": 3,
    "ckpt_every": 6,
    "warmup_steps": 4,
    "ema_start": 6,
    "batch_size": 16,
}
# run 1 differs from run 0 in every kind of per-run setting (seed, optimiser, clipping, EMA)
OTHER = {"seed": 1, "lr": 3e-4, "grad_clip": 0.5, "ema_decay": 0.99, "min_lr_ratio": 0.5}
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-4


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions: one thread is as fast and immune to contention (as test_train)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cfgs(differ: str = "settings", **kw):
    """Two runs: of other seeds only (one schedule: one stacked Adam and EMA update), or also
    of other settings (each run's own optimiser and EMA on its slice)."""
    cfg = make_config("demo", **{**TINY, **kw})
    return [cfg, cfg.replace(**(OTHER if differ == "settings" else {"seed": 1}))]


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)


def alone(cfgs, data, root: Path, method: str = "ma-cdmp") -> list[Path]:
    runs = []
    for k, cfg in enumerate(cfgs):
        tr = Trainer(method, cfg, data, root / f"alone{k}", "cpu")
        tr.run(progress=False)
        tr.close()
        runs.append(tr.run_dir)
    return runs


def trainers(cfgs, data, root: Path, method: str = "ma-cdmp", name: str = "st") -> list[Trainer]:
    return [Trainer(method, c, data, root / f"{name}{k}", "cpu") for k, c in enumerate(cfgs)]


def close(trs) -> None:
    for tr in trs:
        tr.close()


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders of the same run: logs and weights within the stated tolerance."""
    la, lb = read_losses(a), read_losses(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb, strict=True):
        for key in ra:
            if key != "wall_s":
                assert rb[key] == pytest.approx(ra[key], rel=LOSS_RTOL), (key, ra["step"])
    ca, cb = ckpt(a), ckpt(b)
    assert ca["step"] == cb["step"] and ca["config"] == cb["config"]
    assert torch.equal(ca["rng"], cb["rng"])  # the same draws from the same generator
    for part in ("model", "ema"):
        assert list(ca[part]) == list(cb[part])
        for key in ca[part]:
            torch.testing.assert_close(cb[part][key], ca[part][key], rtol=0, atol=WEIGHT_ATOL)
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["step"], sb[i]["step"])
        torch.testing.assert_close(sb[i]["exp_avg"], sa[i]["exp_avg"], rtol=1e-3, atol=1e-6)
    # the checkpoint holds the run's own tensors (not the stacked storage): the same size
    size_a, size_b = (p.stat().st_size for p in (a / "checkpoint.pt", b / "checkpoint.pt"))
    assert abs(size_a - size_b) < 0.01 * size_a
    assert (a / "config.json").read_text() == (b / "config.json").read_text()


@pytest.mark.parametrize(
    "guidance, differ, extra",
    [
        ("classifier", "seeds", {}),
        ("classifier", "settings", {}),
        ("cfg", "seeds", {}),
        ("cfg", "seeds", {"filtered": True}),
        ("cfg", "seeds", {"history": 2, "inv_past": True}),
    ],
)
def test_stacked_runs_match_the_runs_alone(tmp_path, guidance, differ, extra):
    """guidance=cfg draws a third random tensor (the keep mask) inside the loss; filtered
    reads one more batch key (rtg0) and a threshold of the data's; inv_past unfolds the
    windows' past for the inverse dynamics."""
    cfgs = tiny_cfgs(differ, guidance=guidance, **extra)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    ref = alone(cfgs, data, tmp_path)
    trs = trainers(cfgs, data, tmp_path)
    train_stacked(trs, progress=False)
    close(trs)
    for r, tr in zip(ref, trs, strict=True):
        assert tr.step == 12
        assert_same_run(r, tr.run_dir)


@pytest.mark.parametrize("norm", NORMS)
def test_both_ways_of_the_group_norm_train_the_runs_alone(tmp_path, norm, monkeypatch):
    """The stacked loss's group norms by vmap's rule or as layer_norm over rows: the runs are
    their runs alone either way, and the rows are what the stacked loss computes with."""
    calls = []
    rows = stacked_mod._group_norm_rows
    monkeypatch.setattr(
        stacked_mod, "_group_norm_rows", lambda *a, **k: calls.append(1) or rows(*a, **k)
    )
    cfgs = tiny_cfgs("settings")
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    ref = alone(cfgs, data, tmp_path)
    trs = trainers(cfgs, data, tmp_path)
    StackedTrainer(trs, norm=norm).run(progress=False)
    close(trs)
    assert bool(calls) == (norm == "rows")
    for r, tr in zip(ref, trs, strict=True):
        assert_same_run(r, tr.run_dir)


@pytest.mark.parametrize("shape, groups", [((6, 12, 5), 3), ((4, 8, 2, 3), 4), ((3, 6, 1), 6)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_as_rows_is_group_norm(shape, groups, affine):
    """Values and gradients (input, scale, shift), alone and under vmap with per-run scales."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64, requires_grad=True)
    args = (w, b) if affine else (None, None)
    want = torch.nn.functional.group_norm(x, groups, *args, 1e-5)
    got = stacked_mod._group_norm_rows(x, groups, *args, 1e-5)
    torch.testing.assert_close(got, want)
    up = torch.randn(shape, generator=g, dtype=torch.float64)
    leaves = [x, w, b] if affine else [x]
    torch.testing.assert_close(
        torch.autograd.grad(got, leaves, up), torch.autograd.grad(want, leaves, up)
    )
    xs, ws, bs = (torch.stack([t.detach(), 2 * t.detach() + 1]) for t in (x, w, b))
    torch.testing.assert_close(
        torch.vmap(lambda x, w, b: stacked_mod._group_norm_rows(x, groups, w, b))(xs, ws, bs),
        torch.vmap(lambda x, w, b: torch.nn.functional.group_norm(x, groups, w, b))(xs, ws, bs),
    )
    with pytest.raises(ValueError, match="num_groups: must divide the"):
        stacked_mod._group_norm_rows(x, 5)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("k, stride, pad", [(5, 1, 2), (1, 1, 0), (3, 2, 1), (4, 2, 1)])
def test_convolutions_as_products_are_convolutions(transpose, k, stride, pad):
    """Values and gradients of the stacked runs' convolutions (unfold + one product), under
    vmap with per-run weights, against torch's own (float64)."""
    if not transpose and k % 2 == 0:
        pytest.skip("the backbones' plain convolutions have odd kernels")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    shape = (6, 5, k) if transpose else (5, 6, k)
    w = torch.randn(3, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ours = stacked_mod._conv_transpose1d_matmul if transpose else stacked_mod._conv1d_matmul
    theirs = F.conv_transpose1d if transpose else F.conv1d
    got = torch.vmap(lambda x, w, b: ours(x, w, b, stride, pad))(x, w, b)
    want = torch.vmap(lambda x, w, b: theirs(x, w, b, stride, pad))(x, w, b)
    torch.testing.assert_close(got, want)
    up = torch.randn(want.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        torch.autograd.grad(got, [x, w, b], up), torch.autograd.grad(want, [x, w, b], up)
    )


def test_clip_stacked_is_clip_grad_norm_per_run():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(3, *s, generator=g) for s in [(4, 5), (7,), (2, 3, 2)]]
    for t in grads:
        t[2].mul_(1e-3)  # run 2 under its limit: left as it is
    max_norm = torch.tensor([1.0, 0.5, 2.0])
    want = []
    for r in range(3):
        ps = [torch.nn.Parameter(t[r].clone()) for t in grads]
        for p, t in zip(ps, grads, strict=True):
            p.grad = t[r].clone()
        torch.nn.utils.clip_grad_norm_(ps, float(max_norm[r]))
        want.append([p.grad for p in ps])
    before = [t[2].clone() for t in grads]
    clip_stacked(grads, max_norm)
    for r in range(3):
        for t, w in zip(grads, want[r], strict=True):
            torch.testing.assert_close(t[r], w)
    assert all(torch.equal(t[2], b) for t, b in zip(grads, before, strict=True))


def test_flat_update_of_stacked_runs_is_each_runs_update():
    """``FlatUpdate(runs=K)``: the K runs' stacked tensors laid out along the rows of (K, P)
    buffers; one step clips each run to its own norm, takes Adam's step and the EMA's as K
    runs alone would (float rounding: the norm summed over the row, not per tensor)."""
    k, g = 3, torch.Generator().manual_seed(2)
    shapes = [(4, 5), (7,), (2, 3, 2), (1,)]  # one run's sizes 20, 7, 12, 1: two gaps
    params = [torch.nn.Parameter(torch.randn(k, *sh, generator=g)) for sh in shapes]
    ema = [p.detach().clone() + 0.1 for p in params]
    grads = [torch.randn(k, *sh, generator=g) for sh in shapes]
    for t in grads:
        t[2].mul_(1e-3)  # run 2 under its limit
    max_norm = torch.tensor([1.0, 0.5, 2.0])
    # the runs alone: clip_grad_norm_, Adam (the stacked optimiser's settings), EMA lerp
    want_p, want_e = [], []
    for r in range(k):
        ps = [torch.nn.Parameter(p.detach()[r].clone()) for p in params]
        for q, t in zip(ps, grads, strict=True):
            q.grad = t[r].clone()
        torch.nn.utils.clip_grad_norm_(ps, float(max_norm[r]))
        torch.optim.Adam(ps, lr=1e-2, foreach=True).step()
        es = [e[r].clone() for e in ema]
        torch._foreach_lerp_(es, [q.detach() for q in ps], 0.25)
        want_p.append([q.detach() for q in ps])
        want_e.append(es)
    opt = torch.optim.Adam(params, lr=1e-2, foreach=True)
    flat = FlatUpdate(params, ema, opt, runs=k)
    assert flat.param.shape == (k, 20 + 8 + 12 + 4)  # each run's slices on 16-byte bounds
    assert flat.offsets == [0, 20, 28, 40]
    for p, e in zip(params, ema, strict=True):
        assert p.data_ptr() >= flat.param.data_ptr() and e.data_ptr() >= flat.ema.data_ptr()
        assert p[1].is_contiguous()  # one run's slice: contiguous
    # a loss over the pieces (views of the buffer) whose gradient is `grads`
    views = flat.pieces()
    assert [v.shape for v in views] == [p.shape for p in params]
    assert all(torch.equal(v, p) for v, p in zip(views, params, strict=True))
    sum((v * t).sum() for v, t in zip(views, grads, strict=True)).backward()
    assert flat.ready() and flat.leaf.grad.shape == flat.param.shape
    flat.adam(max_norm)
    flat.average(0.25)
    for r in range(k):
        for p, e, wp, we in zip(params, ema, want_p[r], want_e[r], strict=True):
            torch.testing.assert_close(p.detach()[r], wp)
            torch.testing.assert_close(e[r], we)
    assert all(float(opt.state[p]["step"]) == 1.0 for p in params)  # the optimiser's views
    gaps = torch.ones_like(flat.param, dtype=torch.bool)
    for o, n in zip(flat.offsets, flat.sizes, strict=True):
        gaps[:, o : o + n] = False
    assert not flat.param[gaps].any() and not flat.leaf.grad[gaps].any()  # gaps stay zero
    with pytest.raises(ValueError, match=r"runs=2 needs every tensor stacked as \(2, ...\)"):
        FlatUpdate(params, ema, torch.optim.Adam(params), runs=2)


@pytest.mark.parametrize("flat", [True, False])
def test_stacked_runs_of_one_schedule_update_flat_or_per_tensor(tmp_path, flat):
    """Runs of one schedule whose configuration has ``flat`` (the default) take the update
    over (K, P) buffers, as each would alone, and ``flat=false`` the per-tensor one; either way
    each stacked run is its run alone. ``update`` overrides the field; runs of other schedules
    keep their own optimisers; an update not known is refused by name."""
    cfgs = [c.replace(flat=flat) for c in tiny_cfgs("seeds")]
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    ref = alone(cfgs, data, tmp_path)
    trs = trainers(cfgs, data, tmp_path)
    st = StackedTrainer(trs)
    assert st.shared and (st._flat is not None) == flat
    assert st.update == ("flat" if flat else "tensors")
    st.run(progress=False)
    close(trs)
    for r, tr in zip(ref, trs, strict=True):
        assert_same_run(r, tr.run_dir)
    other = trainers(tiny_cfgs("settings"), data, tmp_path, name="other")
    with pytest.raises(ValueError, match=r"update: must be one of \('tensors', 'flat'\)"):
        StackedTrainer(other, update="fused")
    st = StackedTrainer(other, update="flat")
    assert not st.shared and st._flat is None and st.update == "tensors"
    st.close()
    close(other)
    over = trainers(cfgs, data, tmp_path, name="over")
    st = StackedTrainer(over, update="tensors" if flat else "flat")
    assert st.update == ("tensors" if flat else "flat")
    st.close()
    close(over)


def test_stacked_runs_with_an_unused_parameter_keep_the_per_tensor_update(tmp_path):
    """Adam leaves a parameter without a gradient as it is; the flat update would not, so
    stacked runs whose loss leaves one unused keep the per-tensor update."""
    cfgs = tiny_cfgs("seeds")
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    trs = trainers(cfgs, data, tmp_path)
    full = type(trs[0].method).loss

    def inverse_only(self, batch, gen):  # the noise and return models get no gradient
        out = full(self, batch, gen)
        return {**out, "loss": out["inv"]}

    for tr in trs:
        tr.method.loss = inverse_only.__get__(tr.method)  # type: ignore[method-assign]
    head = trs[0].method.classifier.head.weight
    before = head.detach().clone()
    st = StackedTrainer(trs, update="flat")
    assert st.shared and st._flat is None and "classifier.head.weight" in st._unused
    for _ in range(3):
        st.train_step()
    assert torch.equal(trs[0].method.classifier.head.weight, before)
    st.close()
    close(trs)


def test_a_norm_not_known_is_refused_by_name(tmp_path):
    cfgs = tiny_cfgs("seeds")
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    trs = trainers(cfgs, data, tmp_path)
    with pytest.raises(ValueError, match=r"norm: must be one of \('native', 'rows'\)"):
        StackedTrainer(trs, norm="layer")
    close(trs)


def test_stacked_run_folders_are_ordinary_runs(tmp_path):
    cfgs = tiny_cfgs()
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    trs = trainers(cfgs, data, tmp_path)
    train_stacked(trs, progress=False)
    close(trs)
    for tr in trs:
        meta = json.loads((tr.run_dir / "config.json").read_text())
        assert meta["config"] == tr.cfg.to_dict()
        pol = load_policy(str(tr.run_dir))  # a run folder is a policy, stacked or not
        assert isinstance(pol, RunPolicy)
        ema = ckpt(tr.run_dir)["ema"]
        for key, value in load_run(tr.run_dir, "cpu").state_dict().items():
            assert torch.equal(value, ema[key])
        obs = np.random.default_rng(0).uniform(5, 35, size=(6, 4)).astype(np.float32)
        a = pol.act_agents(obs, obs)
        assert a.shape == (6,) and np.all(np.isfinite(a))
    # one of them goes on alone, longer: it resumes from its step like any run
    longer = Trainer("ma-cdmp", cfgs[1].replace(n_epochs=2), data, trs[1].run_dir, "cpu")
    assert longer.step == 12
    longer.run(progress=False)
    assert read_losses(trs[1].run_dir)[-1]["step"] == 24


@pytest.mark.parametrize("differ", ["seeds", "settings"])
def test_a_resumed_stacked_run_is_the_uninterrupted_one(tmp_path, differ):
    cfgs = tiny_cfgs(differ)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    full = trainers(cfgs, data, tmp_path, name="full")
    train_stacked(full, progress=False)
    close(full)
    cut = trainers(cfgs, data, tmp_path, name="cut")
    train_stacked(cut, progress=False, stop_after=5)  # between two logs and checkpoints
    close(cut)
    assert [ckpt(tr.run_dir)["step"] for tr in cut] == [5, 5]
    shutil.copytree(cut[1].run_dir, tmp_path / "solo")
    again = trainers(cfgs, data, tmp_path, name="cut")
    assert [tr.step for tr in again] == [5, 5]
    train_stacked(again, progress=False)
    close(again)
    for a, b in zip(full, again, strict=True):
        assert strip(read_losses(a.run_dir)) == strip(read_losses(b.run_dir))
        ca, cb = ckpt(a.run_dir), ckpt(b.run_dir)
        assert all(torch.equal(ca["ema"][k], cb["ema"][k]) for k in ca["ema"])
        assert torch.equal(ca["rng"], cb["rng"])
    # a stacked run's folder also resumes alone (within the stacked-vs-alone tolerance)
    solo = Trainer("ma-cdmp", cfgs[1], data, tmp_path / "solo", "cpu")
    solo.run(progress=False)
    solo.close()
    assert_same_run(full[1].run_dir, tmp_path / "solo")


def test_a_stacked_run_resumes_under_the_other_update(tmp_path):
    """Checkpoints keep each tensor's Adam state, whichever update wrote them: runs stopped
    under the per-tensor update go on under the flat one (the default) on the same curve."""
    cfgs = tiny_cfgs("seeds")
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    full = trainers(cfgs, data, tmp_path, name="full")
    StackedTrainer(full, update="tensors").run(progress=False)
    close(full)
    cut = trainers(cfgs, data, tmp_path, name="cut")
    StackedTrainer(cut, update="tensors").run(progress=False, stop_after=5)
    close(cut)
    again = trainers(cfgs, data, tmp_path, name="cut")
    assert [tr.step for tr in again] == [5, 5]
    st = StackedTrainer(again)
    assert st.update == "flat"
    st.run(progress=False)
    close(again)
    for a, b in zip(full, again, strict=True):
        assert_same_run(a.run_dir, b.run_dir)


def test_sigterm_saves_the_last_whole_step_and_resumes(tmp_path):
    cfgs = tiny_cfgs()
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    full = trainers(cfgs, data, tmp_path, name="full")
    train_stacked(full, progress=False)
    close(full)
    sig = Interrupting(cfgs[0].horizon, cfgs[0].gamma, at=7, signum=signal.SIGTERM)
    cut = [
        Trainer("ma-cdmp", cfgs[0], sig, tmp_path / "cut0", "cpu"),
        Trainer("ma-cdmp", cfgs[1], data, tmp_path / "cut1", "cpu"),
    ]
    st = StackedTrainer(cut)  # draws a few batches of its own to try the stacked loss
    sig.calls = 0  # then one batch of run 0 a step: the signal comes while step 7 draws it
    with pytest.raises(TrainingInterrupted, match="stopped at step 7"):
        st.run(progress=False)
    close(cut)
    assert [ckpt(tr.run_dir)["step"] for tr in cut] == [7, 7]
    again = trainers(cfgs, data, tmp_path, name="cut")
    train_stacked(again, progress=False)
    close(again)
    for a, b in zip(full, again, strict=True):
        assert strip(read_losses(a.run_dir)) == strip(read_losses(b.run_dir))


def test_runs_of_other_lengths_finish_packed(tmp_path):
    cfgs = tiny_cfgs()
    cfgs[1] = cfgs[1].replace(max_steps=18)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    ref = alone(cfgs, data, tmp_path)
    trs = trainers(cfgs, data, tmp_path)
    train_stacked(trs, progress=False)
    close(trs)
    assert [tr.step for tr in trs] == [12, 18]
    for r, tr in zip(ref, trs, strict=True):
        assert_same_run(r, tr.run_dir)


def test_what_cannot_be_stacked_is_named_and_packed_instead(tmp_path):
    cfgs = tiny_cfgs()
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    wide = [cfgs[0], cfgs[1].replace(dim=16)]
    trs = trainers(wide, data, tmp_path, name="wide")
    with pytest.raises(NotStackable, match="config dim: run 0 .* has 8, run 1 .* has 16"):
        check_stackable(trs)
    close(trs)
    cfg_kind = [cfgs[0], cfgs[1].replace(guidance="cfg")]
    trs = trainers(cfg_kind, data, tmp_path, name="guid")
    with pytest.raises(NotStackable, match="config guidance"):
        StackedTrainer(trs)
    close(trs)
    # runs at different steps: refused by the stacked trainer, packed by train_many
    first = Trainer("ma-cdmp", cfgs[0], data, tmp_path / "at0", "cpu")
    train_packed([first], progress=False, stop_after=4)
    first.close()
    trs = [Trainer("ma-cdmp", c, data, tmp_path / f"at{k}", "cpu") for k, c in enumerate(cfgs)]
    with pytest.raises(NotStackable, match="step: run 0 .* has 4, run 1 .* has 0"):
        StackedTrainer(trs)
    mode, reason = train_many(trs, progress=False)
    assert mode == "packed" and "step" in reason
    assert [tr.step for tr in trs] == [12, 12]
    close(trs)
    trs = trainers(cfgs, data, tmp_path, name="many")
    assert train_many(trs, progress=False) == ("stacked", "")
    close(trs)
    # one compiled, one not: one step function for all, so refused by name
    trs = [
        Trainer("ma-cdmp", c, data, tmp_path / f"comp{k}", "cpu", compile=k == 1)
        for k, c in enumerate(cfgs)
    ]
    with pytest.raises(NotStackable, match="compile: run 0 .* has False, run 1 .* has True"):
        check_stackable(trs)
    close(trs)


def test_compile_is_gpu_only_for_stacked_runs(tmp_path):
    """On the CPU --compile leaves the stacked step eager (Inductor's CPU code for the vmapped
    backward crashed with torch 2.13); the GPU path is tests/test_stacked.py's GPU tests."""
    cfgs = tiny_cfgs(differ="seeds")
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    trs = [
        Trainer("ma-cdmp", c, data, tmp_path / f"c{k}", "cpu", compile=True)
        for k, c in enumerate(cfgs)
    ]
    st = StackedTrainer(trs)
    assert not st.compiled
    st.run(progress=False)
    close(trs)
    assert_same_run(alone(cfgs, data, tmp_path / "alone")[0], trs[0].run_dir)


def test_a_loss_whose_draws_depend_on_the_data_is_refused(tmp_path, monkeypatch):
    cfgs = tiny_cfgs()
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    trs = trainers(cfgs, data, tmp_path)

    plain = PlannerModels.loss

    def loss(self, batch, generator=None):
        out = plain(self, batch, generator)
        torch.bernoulli(torch.sigmoid(batch["y"]), generator=generator)  # shaped by the data
        return out

    monkeypatch.setattr(PlannerModels, "loss", loss)
    with pytest.raises(NotStackable, match="bernoulli .* tensor argument"):
        StackedTrainer(trs)
    close(trs)


@pytest.mark.parametrize("method", ["bc", "ma-td3bc", "ma-cql"])
def test_baselines_stack_as_they_train_alone(tmp_path, method):
    """ma-td3bc: target networks and a step counter updated in after_step, per run."""
    cfg = method_config(method, "demo", max_steps=6, log_every=2, ckpt_every=6, batch_size=16)
    cfgs = [cfg, cfg.replace(seed=1, lr=cfg.lr * 2)]
    data = BanditWindows(cfg.horizon, cfg.gamma)
    ref = alone(cfgs, data, tmp_path, method)
    trs = trainers(cfgs, data, tmp_path, method)
    train_stacked(trs, progress=False)
    close(trs)
    for r, tr in zip(ref, trs, strict=True):
        assert_same_run(r, tr.run_dir)


# ---- GPU (skipped without CUDA): the captured stacked step at the paper preset's shapes ----

PAPER_GPU = {"max_steps": 20, "log_every": 5, "ckpt_every": 20, "warmup_steps": 5,
             "ema_start": 10}  # fmt: skip


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """Comparisons need cuDNN kernels that add in the same order every call (test_gpu.py)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)


def paper_cfgs(k: int):
    cfg = make_config("paper", **PAPER_GPU)
    return [cfg.replace(seed=i) for i in range(k)]


def gpu_trainers(
    cfgs, data, root: Path, name: str, capture: bool = True, compile: bool = False
) -> list[Trainer]:
    return [
        Trainer("ma-cdmp", c, data, root / f"{name}{k}", "cuda", capture=capture, compile=compile)
        for k, c in enumerate(cfgs)
    ]


def assert_close_losses(a: Path, b: Path, rel: float) -> None:
    la, lb = read_losses(a), read_losses(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    keys = ("loss", "inv", "diff", "cls")
    worst = max(abs(rb[k] / ra[k] - 1) for ra, rb in zip(la, lb, strict=True) for k in keys)
    print(f"{a.name} vs {b.name}: largest relative loss difference {worst:.2e}")
    for ra, rb in zip(la, lb, strict=True):
        for key in keys:
            assert rb[key] == pytest.approx(ra[key], rel=rel), (key, ra["step"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("k", [2, 8])
def test_gpu_stacked_equals_alone(tmp_path, k):
    """Captured, each. The same batches and noise (the generators end equal), other kernels:
    on a GPU convolutions are TF32 (cuDNN's default; the stacked ones as batched TF32 matrix
    products), and Adam turns their rounding differences into small weight differences, so a
    stacked run is its lone run within 2e-2 relative after 20 steps (seen on an H200: at most
    3.3e-3) and inside the spread of the 8 seeds (seen: at most 0.49x that spread over 1,500
    steps, 0.06x in the median; docs/notes/results/gpu-2026-12-02-stacked)."""
    cfgs = paper_cfgs(k)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    pick = [0, k - 1]
    for i in pick:
        (tr,) = gpu_trainers([cfgs[i]], data, tmp_path, f"alone{i}-")
        tr.run(progress=False)
        tr.close()
    trs = gpu_trainers(cfgs, data, tmp_path, "st")
    st = StackedTrainer(trs)
    st.run(progress=False)
    assert st.graph is None and st.closed  # unstacked after the run
    close(trs)
    stacked = [read_losses(tr.run_dir) for tr in trs]
    for i in pick:
        assert torch.equal(ckpt(tmp_path / f"alone{i}-0")["rng"], ckpt(trs[i].run_dir)["rng"])
        assert_close_losses(tmp_path / f"alone{i}-0", trs[i].run_dir, rel=2e-2)
        if k >= 8:  # within the seed spread at every logged step after the first
            lone = read_losses(tmp_path / f"alone{i}-0")
            for j in range(1, len(lone)):
                spread = np.ptp([s[j]["loss"] for s in stacked])
                assert abs(lone[j]["loss"] - stacked[i][j]["loss"]) < spread, lone[j]["step"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
def test_gpu_captured_stacked_step_equals_eager(tmp_path):
    cfgs = paper_cfgs(2)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    eager = gpu_trainers(cfgs, data, tmp_path, "eager", capture=False)
    train_stacked(eager, progress=False)
    graph = gpu_trainers(cfgs, data, tmp_path, "graph", capture=True)
    st = StackedTrainer(graph)
    st.prepare()
    assert st.graph is not None and st.step == 3  # three eager warm-up steps, then capture
    st.run(progress=False)
    for a, b in zip(eager, graph, strict=True):
        assert_close_losses(a.run_dir, b.run_dir, rel=1e-4)
        ca, cb = ckpt(a.run_dir), ckpt(b.run_dir)
        for key in ca["model"]:
            torch.testing.assert_close(cb["model"][key], ca["model"][key], rtol=1e-3, atol=1e-5)
    close(eager + graph)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
def test_gpu_resumed_stacked_run_equals_uninterrupted(tmp_path):
    cfgs = paper_cfgs(2)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    full = gpu_trainers(cfgs, data, tmp_path, "full")
    train_stacked(full, progress=False)
    cut = gpu_trainers(cfgs, data, tmp_path, "cut")
    train_stacked(cut, progress=False, stop_after=9)
    close(full + cut)
    again = gpu_trainers(cfgs, data, tmp_path, "cut")
    assert [tr.step for tr in again] == [9, 9]
    train_stacked(again, progress=False)
    close(again)
    for a, b in zip(full, again, strict=True):
        assert_close_losses(a.run_dir, b.run_dir, rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("k, update", [(1, "tensors"), (2, "tensors"), (2, "flat")])
def test_gpu_compiled_stacked_equals_stacked(tmp_path, k, update):
    """The compiled stacked step (the vmapped loss and the clipping through torch.compile,
    captured) trains the runs of the uncompiled one: the same draws (the generators end
    equal), other kernels (fused by Inductor; the convolutions' products in float32 where the
    uncompiled ones use TF32), so within 2e-2 relative after 20 steps, as stacked and alone.
    With ``update="flat"`` the compiled loss reads the weights as views of one buffer."""
    cfgs = paper_cfgs(k)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    plain = gpu_trainers(cfgs, data, tmp_path, "plain")
    StackedTrainer(plain, update=update).run(progress=False)
    comp = gpu_trainers(cfgs, data, tmp_path, "comp", compile=True)
    st = StackedTrainer(comp, update=update)
    assert st.compiled and (st._flat is not None) == (update == "flat")
    st.prepare()
    assert st.graph is not None  # compiled in the warm-up steps, then captured
    st.run(progress=False)
    close(plain + comp)
    for a, b in zip(plain, comp, strict=True):
        assert torch.equal(ckpt(a.run_dir)["rng"], ckpt(b.run_dir)["rng"])
        assert_close_losses(a.run_dir, b.run_dir, rel=2e-2)


def stacked_off_and_on(tmp_path, field: str) -> tuple[StackedTrainer, StackedTrainer]:
    """Two paper-preset runs stacked with ``field`` (a configuration field, or the stacked
    trainer's ``update`` as "flat") off, then on (captured), trained to the end and unstacked;
    they draw the same numbers (the generators end equal)."""
    cfgs = paper_cfgs(2)
    data = SyntheticWindows(cfgs[0].horizon, cfgs[0].gamma)
    pair = []
    for on in (False, True):
        kw = {"update": "flat" if on else "tensors"} if field == "update" else {}
        cfg_on = {} if field == "update" else {field: on}
        trs = gpu_trainers([c.replace(**cfg_on) for c in cfgs], data, tmp_path, f"{on}")
        st = StackedTrainer(trs, **kw)
        st.prepare()
        assert st.graph is not None
        st.run(progress=False)
        close(trs)
        pair.append(st)
    for a, b in zip(pair[0].trainers, pair[1].trainers, strict=True):
        assert torch.equal(ckpt(a.run_dir)["rng"], ckpt(b.run_dir)["rng"])
    return pair[0], pair[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
def test_gpu_stacked_flat_update_equals_per_tensor(tmp_path):
    """``update="flat"`` for stacked runs (the update over (K, P) buffers, the weights read
    through views of them), captured: up to the norms' float rounding, the same losses and
    weights as the per-tensor update."""
    lists, flat = stacked_off_and_on(tmp_path, "update")
    assert lists._flat is None and flat._flat is not None
    for a, b in zip(lists.trainers, flat.trainers, strict=True):
        assert_close_losses(a.run_dir, b.run_dir, rel=1e-3)
        ca, cb = ckpt(a.run_dir), ckpt(b.run_dir)
        for part in ("model", "ema"):
            for key in ca[part]:
                torch.testing.assert_close(cb[part][key], ca[part][key], rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.usefixtures("deterministic_cudnn")
def test_gpu_stacked_streams_equal_stacked(tmp_path):
    """``streams`` inside the vmapped loss of stacked runs (each of the three models on a CUDA
    stream of its own, captured): the same draws and the same losses as one stream."""
    plain, par = stacked_off_and_on(tmp_path, "streams")
    for a, b in zip(plain.trainers, par.trainers, strict=True):
        assert_close_losses(a.run_dir, b.run_dir, rel=1e-4)
