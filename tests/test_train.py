"""Joint training, checkpoints, resumption, the CLI, and sampling from a trained model."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from macdmp.app import train as train_cli
from macdmp.diffusion import Conditioning, dpm_levels, dpm_warm_level, sample
from macdmp.methods import (
    CheckpointMismatchError,
    Trainer,
    TrainingInterrupted,
    load_run,
    lr_factor,
    read_losses,
    train,
)
from macdmp.methods import trainer as trainer_module
from macdmp.methods.config import parse_sets
from macdmp.planner import make_config, plan
from macdmp.planner.plan import shift_plans
from macdmp.planner.synthetic import SyntheticWindows

TINY = {
    "horizon": 8,
    "dim": 8,
    "groups": 4,
    "n_diffusion_steps": 10,
    "inv_hidden": 32,
    "n_epochs": 4,
    "steps_per_epoch": 10,
    "log_every": 5,
    "ckpt_every": 10,
    "warmup_steps": 5,
    "ema_start": 10,
    "batch_size": 16,
}


def tiny_cfg(**kw):
    return make_config("demo", **{**TINY, **kw})


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def test_lr_schedule() -> None:
    cfg = tiny_cfg(warmup_steps=10, n_epochs=10, steps_per_epoch=10, min_lr_ratio=0.1)
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 100) == pytest.approx(0.1)
    assert lr_factor(cfg.replace(lr_schedule="constant"), 50) == 1.0


def test_run_folder_and_checkpoint_contents(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    train(cfg, data, tmp_path, progress=False)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta == {"method": "ma-cdmp", "method_version": 1, "config": cfg.to_dict()}
    recs = read_losses(tmp_path)
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(np.isfinite(r[k]) for r in recs for k in ("loss", "inv", "diff", "cls"))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for key in ("config", "model", "ema", "stats", "fingerprint", "optimizer", "step"):
        assert key in ckpt
    assert ckpt["fingerprint"] == data.fingerprint and ckpt["step"] == 40
    assert not list(tmp_path.glob("*.tmp"))


class Interrupting(SyntheticWindows):
    """Sends this process a signal while the n-th batch is drawn, as Ctrl-C or `kill` would."""

    def __init__(self, *a, at: int, signum: int = signal.SIGINT, **kw) -> None:
        super().__init__(*a, **kw)
        self.calls, self.at, self.signum = 0, at, signum

    def torch_sampler(self, device, keys=("x", "xbar", "act", "rew", "y")):
        inner = super().torch_sampler(device, keys)
        outer = self

        class Sampler:
            def sample(self, b, generator=None):
                outer.calls += 1
                if outer.calls == outer.at:
                    os.kill(os.getpid(), outer.signum)
                return inner.sample(b, generator)

        return Sampler()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_on_the_same_loss_curve(tmp_path: Path, signum) -> None:
    cfg = tiny_cfg()
    full = tmp_path / "full"
    train(cfg, SyntheticWindows(cfg.horizon, cfg.gamma), full, progress=False)
    cut = tmp_path / "cut"
    with pytest.raises(TrainingInterrupted):
        train(cfg, Interrupting(cfg.horizon, cfg.gamma, at=18, signum=signum), cut, progress=False)
    # The signal arrived during step 18: that step completes, then the state is saved.
    ckpt = torch.load(cut / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 18 and ckpt["wall_s"] > 0
    # Resume (run length may be changed on resume; everything else must match).
    tr = Trainer("ma-cdmp", cfg, SyntheticWindows(cfg.horizon, cfg.gamma), cut)
    assert tr.step == 18
    tr.run(progress=False)
    assert strip(read_losses(cut)) == strip(read_losses(full))
    walls = [r["wall_s"] for r in read_losses(cut)]
    assert walls == sorted(walls)  # wall time keeps counting across the resume
    a = torch.load(full / "checkpoint.pt", weights_only=False)["ema"]
    b = torch.load(cut / "checkpoint.pt", weights_only=False)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_other_config_or_dataset_is_refused(tmp_path: Path) -> None:
    cfg = tiny_cfg(n_epochs=1)
    train(cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path, progress=False)
    with pytest.raises(CheckpointMismatchError, match="dim: checkpoint 8 vs now 16"):
        Trainer("ma-cdmp", cfg.replace(dim=16), SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path)
    with pytest.raises(CheckpointMismatchError, match="use_mf"):
        Trainer(
            "ma-cdmp", cfg.replace(use_mf=False), SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path
        )
    with pytest.raises(CheckpointMismatchError, match="another dataset"):
        Trainer("ma-cdmp", cfg, SyntheticWindows(cfg.horizon, cfg.gamma, seed=9), tmp_path)
    # A longer run of the same configuration is a resume, not a mismatch.
    assert (
        Trainer("ma-cdmp", cfg.replace(n_epochs=2), SyntheticWindows(8, cfg.gamma), tmp_path).step
        == 10
    )


def test_windows_of_another_reward_are_refused_by_name(tmp_path: Path) -> None:
    """A backlog-reward config (paper-steer's) needs windows of that reward, synthetic ones too."""
    cfg = tiny_cfg(n_epochs=1, reward="own+neighbours-backlog")
    with pytest.raises(ValueError, match="reward: dataset windows use 'delay', config 'own\\+"):
        Trainer("ma-cdmp", cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path / "a")
    data = SyntheticWindows(cfg.horizon, cfg.gamma, reward=cfg.reward)
    assert Trainer("ma-cdmp", cfg, data, tmp_path / "b").step == 0
    with pytest.raises(ValueError, match="reward: 'latency' is not one of delay"):
        SyntheticWindows(cfg.horizon, cfg.gamma, reward="latency")


def test_checkpoint_reloads_to_identical_outputs(tmp_path: Path) -> None:
    cfg = tiny_cfg(n_epochs=1)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    tr = Trainer("ma-cdmp", cfg, data, tmp_path)
    tr.run(progress=False)
    w = data.sample(5, np.random.default_rng(0))
    outs = []
    for models in (load_run(tmp_path), load_run(tmp_path), tr.ema.eval()):
        outs.append(
            plan(
                models,
                w["x"][:, 0],
                w["xbar"][:, 0],
                "dpm2",
                5,
                0.1,
                2,
                torch.Generator().manual_seed(4),
            )
        )
    for acts, plans in outs[1:]:
        assert np.array_equal(acts, outs[0][0]) and np.array_equal(plans, outs[0][1])
    raw = load_run(tmp_path, weights="raw")
    x = torch.randn(3, 8, 8)
    k = torch.tensor([0, 4, 9])
    with torch.no_grad():
        assert torch.equal(raw.eps(x, k), tr.method.eval().eps(x, k))
    assert load_run(tmp_path, device="cpu").train_step == 10


def test_cli_train_and_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        trainer_module,
        "open_windows",
        lambda path, horizon, gamma, reward="delay": SyntheticWindows(horizon, gamma),
    )
    parser = argparse.ArgumentParser(prog="macdmp")
    train_cli.register(parser.add_subparsers(dest="command"))
    sets = [
        "--set",
        "dim=8",
        "groups=4",
        "n_diffusion_steps=10",
        "--set",
        "n_epochs=1",
        "steps_per_epoch=6",
        "log_every=3",
        "ckpt_every=3",
        "batch_size=8",
    ]
    args = parser.parse_args(
        ["train", "--data", "x.h5", "--out", str(tmp_path / "r"), "--no-mf", "--quiet", *sets]
    )
    assert args.func(args) == 0
    assert load_run(tmp_path / "r").cfg.use_mf is False
    assert len(read_losses(tmp_path / "r")) == 2
    # The same command again resumes (finished: nothing to do); a different one is refused.
    assert args.func(args) == 0
    args = parser.parse_args(
        ["train", "--data", "x.h5", "--out", str(tmp_path / "r"), "--quiet", *sets]
    )
    assert args.func(args) == 2
    assert "use_mf" in capsys.readouterr().err
    args = parser.parse_args(
        ["train", "--data", "x", "--out", str(tmp_path / "q"), "--set", "widht=3"]
    )
    assert args.func(args) == 2
    assert "unknown key 'widht'" in capsys.readouterr().err


# ---- a model trained on a known distribution -----------------------------------------------

TRAINED = {
    "horizon": 8,
    "dim": 16,
    "groups": 8,
    "n_diffusion_steps": 20,
    "use_mf": False,
    "n_epochs": 1,
    "steps_per_epoch": 600,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 50,
    "ema_start": 300,
    "ema_decay": 0.99,
    "log_every": 100,
    "ckpt_every": 600,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = make_config("demo", **TRAINED)
    data = SyntheticWindows(cfg.horizon, cfg.gamma, n_modes=2, seed=3)
    run = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is as fast and immune to contention
    try:
        train(cfg, data, run, progress=False)
    finally:
        torch.set_num_threads(threads)
    return load_run(run), data


# Tolerances in units of the data's standard deviation (the model works in normalised units).
MEAN_TOL, STD_TOL = 0.25, 0.35


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, steps",
    [
        ("ddpm", None),
        ("dpm1", 10),
        ("dpm2", 10),
        ("dpm2", 5),
    ],
)
def test_samples_match_training_distribution(trained, solver: str, steps) -> None:
    """Given the first observation, samples match the data's mean and spread at later steps."""
    models, data = trained
    w = data.sample(2000, np.random.default_rng(7))
    z0 = models.to_model_space(torch.from_numpy(w["x"]), None)
    cond = Conditioning.first_step(z0[:, 0], models.cfg.horizon)
    z = sample(
        models.eps,
        models.schedule(),
        tuple(z0.shape),
        solver=solver,
        steps=steps,
        cond=cond,
        generator=torch.Generator().manual_seed(0),
        clip_x0=5.0,
    )
    mean_err = (z[:, 1:].mean(0) - z0[:, 1:].mean(0)).abs().mean()
    std_ratio = (z[:, 1:].std(0) / z0[:, 1:].std(0)).mean()
    assert mean_err < MEAN_TOL, f"mean error {mean_err:.3f}"
    assert abs(std_ratio - 1) < STD_TOL, f"std ratio {std_ratio:.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm2", 10)])
def test_guidance_raises_predicted_return(trained, solver: str, steps) -> None:
    models, data = trained
    w = data.sample(200, np.random.default_rng(8))

    def mean_pred(scale: float) -> float:
        _, plans = plan(
            models, w["x"][:, 0], None, solver, steps, scale, 1, torch.Generator().manual_seed(0)
        )
        return float(models.predict_return(torch.from_numpy(plans), None).mean())

    base, guided = mean_pred(0.0), mean_pred(0.5)
    assert guided > base, (base, guided)


# Real-time planning (docs/guide/realtime.md) on the same trained toy model.
@pytest.mark.slow
def test_warm_started_plans_match_cold_ones_in_distribution(trained) -> None:
    """Re-noising a previous plan (shifted one frame) to ~0.3 K and denoising from there gives
    plans distributed as the cold ones: per-step means within MEAN_TOL and spreads within
    STD_TOL (data standard deviations), the tolerances the cold samplers meet above."""
    models, data = trained
    w = data.sample(1000, np.random.default_rng(9))
    z0 = models.to_model_space(torch.from_numpy(w["x"]), None)
    sch = models.schedule()
    cond = Conditioning.first_step(z0[:, 0], models.cfg.horizon)

    def draw(seed: int, **kw) -> torch.Tensor:
        return sample(
            models.eps,
            sch,
            tuple(z0.shape),
            solver="dpm2",
            steps=10,
            cond=cond,
            generator=torch.Generator().manual_seed(seed),
            clip_x0=5.0,
            **kw,
        )

    cold = draw(0)
    start = dpm_warm_level(sch, 10, 0.3)
    assert start < dpm_levels(sch, 10)[0]
    # each warm plan starts from a cold plan for the same observation, shifted by one frame
    previous = cold
    warm = draw(2, start_level=start, x_start=shift_plans(previous))
    assert torch.equal(warm[:, 0], z0[:, 0])  # the current observation stays pinned
    for z in (cold, warm):
        mean_err = (z[:, 1:].mean(0) - z0[:, 1:].mean(0)).abs().mean()
        std_ratio = (z[:, 1:].std(0) / z0[:, 1:].std(0)).mean()
        assert mean_err < MEAN_TOL, f"mean error {mean_err:.3f}"
        assert abs(std_ratio - 1) < STD_TOL, f"std ratio {std_ratio:.3f}"
    # warm against cold, and the warm plans are not copies of the plans they started from
    assert (warm[:, 1:].mean(0) - cold[:, 1:].mean(0)).abs().mean() < MEAN_TOL
    assert (warm - shift_plans(previous))[:, 1:].abs().mean() > 0.05


# Skipping guidance where sigma_k < 0.5 changes the plan by less than this fraction of what
# guidance itself changes (the same noise), and by less than SKIP_ABS_TOL data stds on average.
SKIP_REL_TOL, SKIP_ABS_TOL = 0.5, 0.05


@pytest.mark.slow
def test_guidance_skipped_at_low_noise_barely_changes_the_plan(trained) -> None:
    models, data = trained
    w = data.sample(500, np.random.default_rng(10))
    z0 = models.to_model_space(torch.from_numpy(w["x"]), None)
    sch = models.schedule()
    cond = Conditioning.first_step(z0[:, 0], models.cfg.horizon)
    calls = []

    def value(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        calls.append(int(idx[0]))
        return models.classifier(x, idx)

    def draw(scale: float, min_sigma: float = 0.0) -> torch.Tensor:
        calls.clear()
        return sample(
            models.eps,
            sch,
            tuple(z0.shape),
            solver="dpm2",
            steps=10,
            cond=cond,
            value=value,
            guide=scale,
            guide_min_sigma=min_sigma,
            generator=torch.Generator().manual_seed(0),
            clip_x0=5.0,
        )

    plain, full = draw(0.0), draw(0.5)
    assert len(calls) == 10
    skipped = draw(0.5, 0.5)
    sigma = sch.ode_sigma.tolist()
    assert calls and all(sigma[k + 1] >= 0.5 for k in calls) and len(calls) < 10
    effect = (full - plain).abs().mean()
    change = (skipped - full).abs().mean()
    assert change < SKIP_REL_TOL * effect, (float(change), float(effect))
    assert change < SKIP_ABS_TOL, float(change)


def test_warm_start_arguments_are_checked(trained) -> None:
    models, _ = trained
    sch = models.schedule()
    x = torch.zeros(2, models.cfg.horizon, models.cfg.channels)
    with pytest.raises(ValueError, match="start_level"):
        sample(models.eps, sch, tuple(x.shape), solver="dpm2", steps=10, start_level=7)
    with pytest.raises(ValueError, match="start_level"):
        sample(models.eps, sch, tuple(x.shape), solver="dpm2", steps=10, start_level=3, x_start=x)
    with pytest.raises(ValueError, match="warm"):
        dpm_warm_level(sch, 10, 1.5)


def test_gpu_arithmetic_fields_are_checked_and_the_cpu_step_stays_float32(tmp_path: Path) -> None:
    """``tf32``, ``bf16`` and ``streams`` (docs/guide/training.md) are booleans, refused by
    name otherwise; on the CPU they are ignored: a run with all set trains exactly as one
    without, and leaves
    torch's process-wide matmul precision as it was. Like the device, they say how a step is
    computed, not which run it is: a run resumes with other values, and a configuration without
    them writes the dict recorded before they existed (the reproduction's digests hash it)."""
    with pytest.raises(ValueError, match="tf32: must be true or false"):
        tiny_cfg(tf32="yes")
    with pytest.raises(ValueError, match="bf16: must be true or false"):
        tiny_cfg(bf16=1)
    with pytest.raises(ValueError, match="streams: must be true or false"):
        tiny_cfg(streams="on")
    sets = parse_sets("ma-cdmp", ["tf32=true", "bf16=off", "streams=false"])
    assert sets == {"tf32": True, "bf16": False, "streams": False}
    cfg = tiny_cfg(n_epochs=1)
    assert (cfg.tf32, cfg.bf16, cfg.streams) == (False, False, True)  # the defaults
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    before = torch.get_float32_matmul_precision()
    train(cfg, data, tmp_path / "fp32", progress=False)
    fast = cfg.replace(tf32=True, bf16=True, streams=False)
    tr = Trainer("ma-cdmp", fast, data, tmp_path / "fast", "cpu")
    assert tr.tf32 is False and tr.bf16 is False
    tr.run(progress=False)
    tr.close()
    assert torch.get_float32_matmul_precision() == before
    assert strip(read_losses(tmp_path / "fast")) == strip(read_losses(tmp_path / "fp32"))
    assert not {"tf32", "bf16", "streams"} & set(cfg.to_dict())
    assert fast.to_dict()["tf32"] is True and fast.to_dict()["streams"] is False
    assert type(cfg).from_dict(fast.to_dict()) == fast
    again = Trainer(
        "ma-cdmp", fast.replace(bf16=False, streams=True, n_epochs=2), data, tmp_path / "fast"
    )
    assert again.step == cfg.total_steps
    again.close()


def test_flat_update_is_the_per_tensor_update(tmp_path: Path) -> None:
    """``flat`` (macdmp.methods.flat, the default): clipping, Adam and the EMA over flat
    buffers train exactly as the per-tensor update on the CPU (weights, EMA and the
    checkpoint's Adam state bit-identical), and a run resumes with the other setting on the
    same loss curve (it says how a step is computed, not which run it is)."""
    with pytest.raises(ValueError, match="flat: must be true or false"):
        tiny_cfg(flat="yes")
    cfg = tiny_cfg(n_epochs=2)
    assert cfg.flat is True and "flat" not in cfg.to_dict()
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    train(cfg, data, tmp_path / "flat", progress=False)
    train(cfg.replace(flat=False), data, tmp_path / "lists", progress=False)
    a = torch.load(tmp_path / "flat" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "lists" / "checkpoint.pt", weights_only=True)
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in b[part])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sb) > 0
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sb for k in sb[i])
    # half with the per-tensor update, the rest flat: the same curve as flat all along
    half = tmp_path / "half"
    first = Trainer("ma-cdmp", cfg.replace(flat=False), data, half, "cpu")
    first.run(progress=False, stop_after=cfg.total_steps // 2)
    first.close()
    tr = Trainer("ma-cdmp", cfg, data, half, "cpu")
    assert tr._flat is not None and tr.step == cfg.total_steps // 2
    tr.run(progress=False)
    tr.close()
    assert strip(read_losses(half)) == strip(read_losses(tmp_path / "flat"))
    c = torch.load(half / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["ema"][k], c["ema"][k]) for k in a["ema"])


def test_flat_update_leaves_a_parameter_without_gradient_alone(tmp_path: Path) -> None:
    """Adam skips a parameter that got no gradient; over a flat buffer it would not, so the
    trainer goes back to the per-tensor update (whose state is the flat one's views)."""
    cfg = tiny_cfg(n_epochs=1)
    tr = Trainer("ma-cdmp", cfg, SyntheticWindows(cfg.horizon, cfg.gamma), tmp_path / "r", "cpu")
    full = tr.method.loss

    def inverse_only(batch, gen):  # the noise and return models get no gradient
        out = full(batch, gen)
        return {**out, "loss": out["inv"]}

    tr.method.loss = inverse_only  # type: ignore[method-assign]
    head = tr.method.classifier.head.weight
    inv = next(tr.method.invdyn.parameters())
    before_head, before_inv = head.detach().clone(), inv.detach().clone()
    for _ in range(3):
        tr.train_step()
    assert tr._flat is None
    assert torch.equal(head, before_head) and not torch.equal(inv, before_inv)
    state = tr.opt.state
    assert float(state[head]["step"]) == 0.0 and float(state[inv]["step"]) == 3.0
    tr.close()


def test_flat_update_refuses_what_one_buffer_cannot_hold() -> None:
    """Parameters of two dtypes cannot share a buffer: refused before anything is re-pointed
    (the trainer then keeps the per-tensor update)."""
    from macdmp.methods.flat import FlatUpdate

    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = torch.optim.Adam([a, b], foreach=True)
    before = a.data_ptr()
    with pytest.raises(ValueError, match="one dtype"):
        FlatUpdate([a, b], [a.detach().clone(), b.detach().clone()], opt)
    assert a.data_ptr() == before and not opt.state
