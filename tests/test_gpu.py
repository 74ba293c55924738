"""GPU-only checks (skipped without CUDA, so never in CI): the CUDA-graph sampling path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdmp.diffusion.graphs import GraphedCall
from macdmp.diffusion.sampler import Conditioning, dpm_warm_level, noise_draws, sample
from macdmp.planner import PlannerModels, make_config, plan
from macdmp.planner.plan import Speed, _backbones, plan_batch, sampling_call
from macdmp.planner.synthetic import SyntheticWindows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _cuda_models(preset: str = "demo", **overrides) -> PlannerModels:
    """An untrained model of a preset on the GPU (nothing checked here depends on training)."""
    cfg = make_config(preset, **overrides)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    return PlannerModels(cfg, data.stats, data.rbs).cuda().eval().requires_grad_(False)


@pytest.mark.parametrize(
    "solver, steps, warm, min_sigma, pinned",
    [("ddpm", None, None, 0.0, 1), ("dpm2", 10, None, 0.0, 1), ("dpm1", 5, None, 0.0, 1),
     ("dpm2", 10, 0.3, 0.5, 1), ("ddpm", None, None, 0.5, 1), ("dpm2", 10, 0.3, 0.0, 3)],
)  # fmt: skip
def test_cuda_graph_replays_the_eager_sampler(solver, steps, warm, min_sigma, pinned):
    """``warm`` is a fraction of the schedule; the level is the solver grid's nearest.
    ``pinned``: the first steps held (1: o_t; 3: with ``history`` = 2, the two before too)."""
    models = _cuda_models("demo")
    cfg = models.cfg
    sch = models.schedule()
    shape = (12, cfg.horizon, cfg.channels)
    nets = _backbones(models, Speed(), shape, sch.device)
    warm = dpm_warm_level(sch, steps, warm) if warm else None
    run = sampling_call(nets, sch, shape, solver, steps, 0.3, 5.0, warm, min_sigma)
    graphed = None
    for seed in (1, 2):  # two replays with new inputs
        g = torch.Generator(device="cuda").manual_seed(seed)
        first = torch.randn(shape[0], pinned, shape[2], device="cuda", generator=g)
        noise = torch.randn(noise_draws(solver, sch.n_steps), *shape, device="cuda", generator=g)
        x_start = torch.randn(shape, device="cuda", generator=g) if warm else None
        inputs = [first, noise] + ([x_start] if warm else [])
        graphed = graphed or GraphedCall(run, inputs, warmup=3)
        replayed = graphed(*inputs)
        eager = sample(
            models.eps,
            sch,
            shape,
            solver=solver,
            steps=steps,
            cond=Conditioning.prefix(first, shape[1]),
            value=models.classifier,
            guide=0.3,
            clip_x0=5.0,
            noise=noise,
            start_level=warm,
            x_start=x_start,
            guide_min_sigma=min_sigma,
        )
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(replayed[:, :pinned], first)


@pytest.mark.parametrize(
    "solver, steps, cfg_weight, scale",
    [("dpm2", 10, 1.5, 0.0), ("ddpm", None, 1.2, 0.0), ("dpm2", 10, 1.0, 0.0),
     ("dpm2", 10, 0.0, 0.3)],
)  # fmt: skip
def test_cuda_graph_replays_the_eager_cfg_sampler(solver, steps, cfg_weight, scale):
    """MA-CDMP trained for classifier-free guidance: the captured loop with its condition
    buffer replays the eager sampler (w = 0 with a scale: classifier guidance on the
    unconditional noise model)."""
    models = _cuda_models("demo", guidance="cfg")
    cfg = models.cfg
    sch = models.schedule()
    shape = (12, cfg.horizon, cfg.channels)
    nets = _backbones(models, Speed(), shape, sch.device)
    run = sampling_call(nets, sch, shape, solver, steps, scale, 5.0, None, 0.0, 1, cfg_weight)
    graphed = None
    for seed in (1, 2):  # two replays with new inputs
        g = torch.Generator(device="cuda").manual_seed(seed)
        first = torch.randn(shape[0], 1, shape[2], device="cuda", generator=g)
        noise = torch.randn(noise_draws(solver, sch.n_steps), *shape, device="cuda", generator=g)
        condition = torch.randn(shape[0], 1, device="cuda", generator=g)
        graphed = graphed or GraphedCall(run, [first, noise, condition], warmup=3)
        replayed = graphed(first, noise, condition)
        eager = sample(
            models.eps, sch, shape, solver=solver, steps=steps,
            cond=Conditioning.prefix(first, shape[1]), value=models.classifier,
            guide=scale, clip_x0=5.0, noise=noise, condition=condition,
            cfg=cfg_weight,
        )  # fmt: skip
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)


def test_the_cfg_actor_plans_through_graphs_in_range():
    """The cfg actor on a GPU (captured, then replayed; a second target reuses the graph)."""
    models = _cuda_models("demo", guidance="cfg")
    obs = np.random.default_rng(0).uniform(0, 20, (9, 4)).astype(np.float32)
    out = []
    for target in (None, models.default_target - 20.0):
        actor = models.make_actor(seed=0, target=target, cfg=1.5)
        actor.reset(9)
        out.append(np.stack([actor.act(obs, obs) for _ in range(2)]))
        assert np.all((out[-1] >= 0) & (out[-1] <= models.rbs))
    assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("speed", [Speed(compile=True), Speed(bf16=True), Speed(True, True)])
def test_compiled_and_bf16_graphs_stay_close_to_float32(speed):
    """Compiled backbones and bf16 inside the captured graph, cold and warm-started: actions
    within 0.05 RB (compiled: 0.01 RB) of the float32 graph's plan with the same draws.

    bf16's bound: docs/guide/realtime.md measured bf16 against float32 on the GPU at 0.001-0.002 RB
    mean and 0.009-0.023 RB at most (100 and 1,000 agents, every +bf16 setting), and this
    test's comparison, repeated for the observation seeds 0-9 on an H200 (2026-12-02), moved
    the actions by 0.0072 RB at most (bf16) and 0.0067 RB (compiled and bf16). 0.05 RB is about
    twice the largest documented error, seven times the largest seen here, and 1/800 of the 40
    RBs a demand spans. It was 0.5 RB, 20 times the documented error, where a bf16 path gone
    wrong in one agent could hide."""
    models = _cuda_models("paper")
    obs = np.random.default_rng(0).normal(20, 5, (9, 4)).astype(np.float32)
    tol = 0.05 if speed.bf16 else 0.01
    prev = None
    for _ in range(2):
        out = {}
        for sp in (Speed(), speed):  # both captured, so both draw the same noise
            gen = torch.Generator(device="cuda").manual_seed(0)
            out[sp is speed] = plan_batch(
                models, obs, obs, "dpm2", 10, 0.1, 1, gen, 5.0, True, warm_from=prev,
                guide_min_sigma=0.5, speed=sp,
            )  # fmt: skip
        assert (out[True][0] - out[False][0]).abs().max() < tol
        prev = out[False][1]


def test_plan_on_gpu_defaults_to_graphs_and_stays_in_range():
    models = _cuda_models("demo")
    obs = np.random.default_rng(0).uniform(0, 20, (9, 4)).astype(np.float32)
    gen = torch.Generator(device="cuda").manual_seed(0)
    actions, plans = plan(models, obs, obs, "dpm2", 10, 0.1, 1, gen)
    assert actions.shape == (9,) and np.all((actions >= 0) & (actions <= models.rbs))
    assert np.allclose(plans[:, 0, :4], obs, atol=1e-3)


def test_a_history_plan_pins_the_past_through_graphs():
    """``history`` = 2 on a GPU (captured): the plans hold the two frames before and the
    current one; the actor keeps them over an episode."""
    models = _cuda_models("demo", history=2)
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 20, (9, 4)).astype(np.float32)
    past = rng.uniform(0, 20, (9, 2, 4)).astype(np.float32)
    gen = torch.Generator(device="cuda").manual_seed(0)
    actions, plans = plan(models, obs, obs, "dpm2", 10, 0.1, 1, gen, past=past, past_mf=past)
    assert np.all((actions >= 0) & (actions <= models.rbs))
    assert np.allclose(plans[:, :2, :4], past, atol=1e-3)
    assert np.allclose(plans[:, :2, 4:], past, atol=1e-3)
    assert np.allclose(plans[:, 2, :4], obs, atol=1e-3)
    actor = models.make_actor(seed=0, warm=0.3)
    actor.reset(9)
    frames = [obs + t for t in range(3)]
    for o in frames:
        actor.act(o, o)
    own = models.from_model_space(actor._prev)[0].cpu().numpy()
    assert np.allclose(own[:, :3], np.stack(frames, axis=1), atol=1e-3)


# ---- the trainer's captured step -----------------------------------------------------------

TINY_GPU = {"batch_size": 32, "n_epochs": 1, "steps_per_epoch": 40, "log_every": 10,
            "ckpt_every": 40, "warmup_steps": 5, "ema_start": 10}  # fmt: skip


def _trainers(tmp_path, n, guidance="classifier", **kw):
    from macdmp.methods import Trainer
    from macdmp.planner import make_config as planner_config

    cfg = planner_config("demo", **TINY_GPU, guidance=guidance)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    return [Trainer("ma-cdmp", cfg, data, tmp_path / f"{kw}-{k}", "cuda", **kw) for k in range(n)]


def _steps(trs, n):
    for tr in trs:
        tr.method.train()
        tr.prepare()
    for _ in range(n):
        for tr in trs:
            tr.train_step()
    for tr in trs:
        tr.sync()


def _assert_same_training(a, b, rtol_loss: float, rtol: float, atol: float) -> None:
    """Two trainers at the same step: their loss sums, weights and EMA weights agree."""
    torch.testing.assert_close(a.acc, b.acc, rtol=rtol_loss, atol=atol)
    for mine, theirs in zip(a.params + a.ema_params, b.params + b.ema_params, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    """Checks that two paths give the same numbers need deterministic cuDNN kernels.

    ``pick_device`` turns cuDNN's autotuner on, and it may pick backward kernels that add in
    a different order on every call (differences of about 1e-5 in a weight after 25 steps,
    seen on an H200 on 2026-11-30). Deterministic mode keeps the autotuner but only among
    kernels that give the same result every time.
    """
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)


@pytest.mark.usefixtures("deterministic_cudnn")
def test_captured_step_matches_the_eager_step(tmp_path):
    (eager,) = _trainers(tmp_path, 1, capture=False)
    (graph,) = _trainers(tmp_path, 1, capture=True)
    _steps([eager], 25)
    _steps([graph], 25 - 3)  # prepare() took 3 eager warm-up steps before capture
    assert graph.graph is not None and graph.step == eager.step == 25
    _assert_same_training(graph, eager, rtol_loss=1e-4, rtol=1e-3, atol=1e-5)


@pytest.mark.usefixtures("deterministic_cudnn")
def test_packed_runs_on_streams_match_a_run_alone(tmp_path):
    (alone,) = _trainers(tmp_path, 1, capture=True)
    packed = _trainers(tmp_path, 3, capture=True)
    _steps([alone], 30)
    _steps(packed, 30)
    for tr in packed:
        torch.testing.assert_close(tr.acc, alone.acc, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("capture", [False, True])
def test_streams_train_the_run_of_one_stream(tmp_path, capture):
    """``streams`` (macdmp.methods.branches): the noise model, the return model and the inverse
    dynamics each on a CUDA stream of its own, forward and backward, eager and inside the
    captured graph, compute what one stream computes: the same draws (the generators end
    equal), losses, weights and EMA weights after 25 steps."""
    from macdmp.methods import Trainer
    from macdmp.planner import make_config as planner_config

    cfg = planner_config("demo", **TINY_GPU)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    one = Trainer("ma-cdmp", cfg.replace(streams=False), data, tmp_path / "one", "cuda",
                  capture=capture)  # fmt: skip
    par = Trainer("ma-cdmp", cfg.replace(streams=True), data, tmp_path / "par", "cuda",
                  capture=capture)  # fmt: skip
    n = 25 - 3 if capture else 25  # prepare() takes 3 eager warm-up steps before capture
    _steps([one], n)
    _steps([par], n)
    assert (par.graph is not None) == capture and par.step == one.step == 25
    assert torch.equal(par.gen.get_state(), one.gen.get_state())
    _assert_same_training(par, one, rtol_loss=1e-5, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("capture", [False, True])
def test_flat_update_trains_the_run_of_the_per_tensor_update(tmp_path, capture):
    """``flat`` (macdmp.methods.flat): clipping, the fused capturable Adam and the EMA over flat
    buffers, eager and inside the captured graph, compute what the per-tensor update computes
    (the EMA as a lerp: last-bit differences), and the checkpoint's Adam state is the same."""
    from macdmp.methods import Trainer
    from macdmp.planner import make_config as planner_config

    cfg = planner_config("demo", **TINY_GPU)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    lists = Trainer("ma-cdmp", cfg.replace(flat=False), data, tmp_path / "lists", "cuda",
                    capture=capture)  # fmt: skip
    flat = Trainer("ma-cdmp", cfg, data, tmp_path / "flat", "cuda", capture=capture)
    assert flat._flat is not None and lists._flat is None
    n = 25 - 3 if capture else 25  # prepare() takes 3 eager warm-up steps before capture
    _steps([lists], n)
    _steps([flat], n)
    assert flat._flat is not None and flat.step == lists.step == 25
    _assert_same_training(flat, lists, rtol_loss=1e-5, rtol=1e-4, atol=1e-6)
    a, b = lists.state()["optimizer"]["state"], flat.state()["optimizer"]["state"]
    assert a.keys() == b.keys()
    for i in a:
        assert float(b[i]["step"]) == float(a[i]["step"]) == 25.0
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b[i][key], a[i][key], rtol=1e-4, atol=1e-7)


@pytest.mark.usefixtures("deterministic_cudnn")
def test_packed_runs_with_streams_match_a_run_alone(tmp_path):
    """Packed runs (each on its own stream) whose losses branch onto side streams: each run's
    branches get side streams of their own, and each run trains as one stream alone."""
    from macdmp.methods import Trainer
    from macdmp.planner import make_config as planner_config

    cfg = planner_config("demo", **TINY_GPU)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    alone = Trainer("ma-cdmp", cfg.replace(streams=False), data, tmp_path / "one", "cuda",
                    capture=True)  # fmt: skip
    packed = [
        Trainer("ma-cdmp", cfg, data, tmp_path / f"par{k}", "cuda", capture=True) for k in range(2)
    ]
    _steps([alone], 30)
    _steps(packed, 30)
    for tr in packed:
        torch.testing.assert_close(tr.acc, alone.acc, rtol=1e-4, atol=1e-5)


def test_compiled_captured_training_runs(tmp_path):
    (eager,) = _trainers(tmp_path, 1, capture=False)
    (comp,) = _trainers(tmp_path, 1, capture=True, compile=True)
    _steps([eager], 20)
    _steps([comp], 17)
    assert torch.isfinite(comp.acc).all()
    torch.testing.assert_close(comp.acc, eager.acc, rtol=2e-2, atol=1e-3)


def test_a_gpu_run_resumes_on_the_cpu(tmp_path):
    from macdmp.methods import Trainer

    (tr,) = _trainers(tmp_path, 1, capture=True)
    tr.run(progress=False)
    cpu = Trainer("ma-cdmp", tr.cfg.replace(n_epochs=2), tr.data, tr.run_dir, "cpu")
    assert cpu.step == 40
    cpu.run(progress=False)
    assert cpu.step == 80


def test_an_interrupted_captured_run_resumes_on_the_same_curve(tmp_path):
    from macdmp.methods import Trainer, read_losses

    (full,) = _trainers(tmp_path / "full", 1, capture=True)
    full.run(progress=False)
    (cut,) = _trainers(tmp_path / "cut", 1, capture=True)
    cut.run(progress=False, stop_after=17)
    again = Trainer("ma-cdmp", cut.cfg, cut.data, cut.run_dir, "cuda")
    assert again.step == 17
    again.run(progress=False)
    for a, b in zip(read_losses(full.run_dir), read_losses(cut.run_dir), strict=True):
        assert a["step"] == b["step"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_the_training_step_never_waits_for_the_host(tmp_path):
    (tr,) = _trainers(tmp_path, 1, capture=False)
    tr._eager_step()  # first step: Adam state and allocator pools
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        tr._body(capturing=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.usefixtures("deterministic_cudnn")
def test_cfg_captured_step_matches_the_eager_step(tmp_path):
    """MA-CDMP with classifier-free guidance: the keep mask is drawn inside the captured step."""
    (eager,) = _trainers(tmp_path / "e", 1, capture=False, guidance="cfg")
    (graph,) = _trainers(tmp_path / "g", 1, capture=True, guidance="cfg")
    _steps([eager], 25)
    _steps([graph], 25 - 3)
    assert graph.graph is not None
    torch.testing.assert_close(graph.acc, eager.acc, rtol=1e-4, atol=1e-5)
    for a, b in zip(graph.params, eager.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "method", ["ma-cql", "ma-td3bc", "ma-dt", "bc", "ma-diffuser", "ma-dd", "madiff"]
)
def test_baselines_capture_and_replay_their_eager_steps(tmp_path, method):
    from test_baselines import BanditWindows
    from test_baselines_diffusion import JointBanditWindows

    from macdmp.methods import Trainer
    from macdmp.methods.base import make_config as method_config

    cfg = method_config(method, "demo", max_steps=40, log_every=10, ckpt_every=40)
    data = (JointBanditWindows if method == "madiff" else BanditWindows)(cfg.horizon, cfg.gamma)
    eager = Trainer(method, cfg, data, tmp_path / "e", "cuda", capture=False)
    graph = Trainer(method, cfg, data, tmp_path / "g", "cuda", capture=True)
    _steps([eager], 12)
    _steps([graph], 12 - 3)
    assert graph.graph is not None
    torch.testing.assert_close(graph.acc, eager.acc, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["ma-diffuser", "ma-dd", "madiff"])
def test_diffusion_baselines_act_through_cuda_graphs_as_eagerly(method, monkeypatch):
    """The actors replay their sampling as a CUDA graph on a GPU: the same actions as the
    eager sampler on the same GPU with the same generator."""
    from test_baselines_diffusion import _untrained

    from macdmp.baselines import diffusion_common

    model = _untrained(method).cuda()
    obs = np.random.default_rng(0).uniform(5, 35, (17, 4)).astype(np.float32)
    out = []
    for graphs in (True, False):
        monkeypatch.setattr(diffusion_common, "CUDA_GRAPHS", graphs)
        actor = model.make_actor(seed=0)
        actor.reset(17)
        actor.set_team_sizes(np.array([8] * 8 + [9] * 9))
        out.append([actor.act(obs, obs) for _ in range(3)])  # capture, then replays
    assert len(diffusion_common._GRAPHS) >= 1
    np.testing.assert_allclose(np.stack(out[0]), np.stack(out[1]), rtol=1e-4, atol=1e-4)


# The step's GPU arithmetic (TrainConfig.tf32, .bf16; docs/guide/training.md, "Speed"). TF32 keeps
# 10 mantissa bits and bf16 7, so the steps are not float32's: after 25 steps of the tiny model
# the summed losses stay within 2% (TF32) and 5% (bf16) of float32's, and the process-wide
# matmul precision is restored after each step. Whether the difference matters for training is
# measured against the seed spread (docs/notes/results/gpu-2026-12-02-speed), not here.
ARITH_RTOL = {"tf32": 2e-2, "bf16": 5e-2, "tf32+bf16": 5e-2}


@pytest.mark.parametrize("switch", sorted(ARITH_RTOL))
def test_tf32_and_bf16_captured_steps_stay_close_to_float32(tmp_path, switch):
    from macdmp.methods import Trainer
    from macdmp.planner import make_config as planner_config

    cfg = planner_config("demo", **TINY_GPU)
    fast = cfg.replace(**{k: True for k in switch.split("+")})
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    before = torch.get_float32_matmul_precision()
    ref = Trainer("ma-cdmp", cfg, data, tmp_path / "fp32", "cuda", capture=True)
    tr = Trainer("ma-cdmp", fast, data, tmp_path / switch, "cuda", capture=True)
    assert (tr.tf32, tr.bf16) == (fast.tf32, fast.bf16)
    _steps([ref], 22)
    _steps([tr], 22)  # 3 eager warm-up steps, then 22 replays of the captured step
    assert tr.graph is not None and tr.step == ref.step == 25
    assert torch.get_float32_matmul_precision() == before
    assert torch.isfinite(tr.acc).all()
    torch.testing.assert_close(tr.acc, ref.acc, rtol=ARITH_RTOL[switch], atol=1e-3)
    for p in tr.params:
        assert p.dtype == torch.float32  # autocast changes the arithmetic, not the weights


def test_a_plans_graphs_are_forgotten_with_its_models():
    """The planner's CUDA graphs, keyed by id(models), go when the models are collected (a new
    model with the same id captures its own graph instead of replaying a stale one)."""
    import gc
    import importlib

    # the package's name `plan` is the function; the module holds the cache
    plan_module = importlib.import_module("macdmp.planner.plan")

    models = _cuda_models("demo")
    obs = np.random.default_rng(0).uniform(0, 20, (6, 4))
    plan_batch(models, obs, obs, solver="dpm2", steps=4)
    mine = [k for k in plan_module._GRAPHS if k[0] == id(models)]
    assert mine
    del models
    gc.collect()
    assert not any(k in plan_module._GRAPHS for k in mine)
