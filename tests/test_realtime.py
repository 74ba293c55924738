"""The real-time planning paths (docs/guide/realtime.md): the ONNX Runtime export against the eager
model, bf16 against float32, and the actor's warm start across frames and episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdmp.diffusion.sampler import _autograd_value_grad
from macdmp.planner import PlannerModels, make_config
from macdmp.planner.plan import Speed, plan_batch
from macdmp.planner.policy import PlannerActor
from macdmp.planner.synthetic import SyntheticWindows

# A small untrained model: what is checked here does not depend on training.
SMALL = dict(horizon=8, dim=8, dim_mults=(1, 2, 4), groups=4, n_diffusion_steps=20, inv_hidden=16)
EXPORT_ATOL = 1e-5  # float32 ONNX Runtime against eager torch, on outputs of order 0.1-1


@pytest.fixture(scope="module")
def models():
    cfg = make_config("demo", **SMALL)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    return PlannerModels(cfg, data.stats, data.rbs).eval().requires_grad_(False)


def _obs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(20, 5, (n, 4)).astype(np.float32)


def test_onnx_export_reproduces_the_eager_model(models) -> None:
    pytest.importorskip("onnxruntime")
    from macdmp.planner.export import OnnxBackbones

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shape = (3, models.cfg.horizon, models.cfg.channels)
        ox = OnnxBackbones(models, shape)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        k = torch.tensor([0, 9, 19])
        torch.testing.assert_close(ox.eps(x, k), models.eps(x, k), rtol=0, atol=EXPORT_ATOL)
        grad = _autograd_value_grad(models.classifier)(x, k)
        assert grad.abs().max() > 1e-3  # a real gradient, not zeros
        torch.testing.assert_close(ox.value_grad(x, k), grad, rtol=0, atol=EXPORT_ATOL)
        # the whole guided plan, cold and warm, through the same sampler
        obs = _obs(3)
        ref = onnx = None
        for speed in (Speed(), Speed(backend="onnx")):
            gen = torch.Generator().manual_seed(0)
            a1, z1 = plan_batch(models, obs, obs, "dpm2", 5, 0.5, generator=gen, speed=speed)
            a2, z2 = plan_batch(
                models, obs, obs, "dpm2", 5, 0.5, generator=gen, speed=speed, warm_from=z1
            )
            if ref is None:
                ref = (a1, a2, z2)
            else:
                onnx = (a1, a2, z2)
        for r, o in zip(ref, onnx, strict=True):  # type: ignore[arg-type]
            torch.testing.assert_close(o, r, rtol=0, atol=1e-4)
    finally:
        torch.set_num_threads(threads)


def _cfg_models(**overrides) -> PlannerModels:
    """A small untrained model of classifier-free guidance, the same every call."""
    cfg = make_config("demo", **SMALL, guidance="cfg", **overrides)
    data = SyntheticWindows(cfg.horizon, cfg.gamma)
    torch.manual_seed(0)
    return PlannerModels(cfg, data.stats, data.rbs).eval().requires_grad_(False)


def _cold_then_warm(m, obs, w: float, backend: str) -> tuple[torch.Tensor, ...]:
    """(actions, plan) of a cold plan, then of a plan warm-started from it, from one stream."""
    speed = Speed(backend=backend)
    gen = torch.Generator().manual_seed(0)
    a1, z1 = plan_batch(m, obs, obs, "dpm2", 5, cfg=w, generator=gen, speed=speed)
    a2, z2 = plan_batch(
        m, obs, obs, "dpm2", 5, cfg=w, generator=gen, speed=speed, warm_from=z1, warm=0.3
    )
    return a1, z1, a2, z2


@pytest.mark.parametrize("w", [1.2, 1.0])
def test_onnx_export_of_a_cfg_model_reproduces_its_plans(w) -> None:
    """Classifier-free guidance through ONNX Runtime: eps takes the condition and its keep
    mask; w = 1.2 calls it with twice the rows, w = 1 with the batch's. Cold and warm plans."""
    pytest.importorskip("onnxruntime")
    m = _cfg_models()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        obs = _obs(3)
        out = {backend: _cold_then_warm(m, obs, w, backend) for backend in ("torch", "onnx")}
        for r, o in zip(out["torch"], out["onnx"], strict=True):
            torch.testing.assert_close(o, r, rtol=0, atol=1e-4)
        actor = m.make_actor(backend="onnx", steps=5, warm=0.3)  # the actor takes it too
        actor.reset(3)
        assert actor.act(obs, obs).shape == (3,)
    finally:
        torch.set_num_threads(threads)


FUSED_ATOL = 1e-4  # the fused graph against the eager sampler: plans (data stds) and RBs


@pytest.mark.parametrize(
    ("backend", "package", "tag"),
    [("fused", "onnxruntime", "onnx fused"), ("openvino", "openvino", "openvino fused")],
)
def test_fused_plan_gives_the_eager_plans_and_decisions(backend, package, tag) -> None:
    """backend=fused (the whole planning call as one ONNX graph, run by ONNX Runtime) and
    backend=openvino (that graph run by OpenVINO) against eager torch, on a model trained for
    classifier-free guidance at w = 1.2 (two rows per eps call): cold and warm plans from the
    same draws, then an actor's decisions over an episode, frame by frame."""
    pytest.importorskip(package)
    m = _cfg_models()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        obs = _obs(3)
        out = {b: _cold_then_warm(m, obs, 1.2, b) for b in ("torch", backend)}
        for r, o in zip(out["torch"], out[backend], strict=True):
            torch.testing.assert_close(o, r, rtol=0, atol=FUSED_ATOL)
        # the warm plan moved from its start, and the actions are not all clipped to a bound
        assert (out[backend][3] - out[backend][1]).abs().max() > 0.01
        assert ((out[backend][0] > 0) & (out[backend][0] < m.rbs)).any()
        acts = {}
        for b in ("torch", backend):  # the same setting: the graphs above are reused
            actor = m.make_actor(seed=4, backend=b, steps=5, warm=0.3)
            actor.reset(3)
            acts[b] = np.stack([actor.act(_obs(3, t), _obs(3, t + 9)) for t in range(6)])
        assert tag in actor.label
        np.testing.assert_allclose(acts[backend], acts["torch"], rtol=0, atol=FUSED_ATOL)
        assert np.ptp(acts[backend], axis=0).max() > 0  # the decisions change frame by frame
    finally:
        torch.set_num_threads(threads)


def test_fused_plan_of_an_inverse_dynamics_with_the_mean_field() -> None:
    """inv_mf: the fused graph takes the measured and the planned mean field to the inverse
    dynamics as eager torch does (the mean field differs from the observation here)."""
    pytest.importorskip("onnxruntime")
    m = _cfg_models(inv_mf="both")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for backend in ("torch", "fused"):
            gen = torch.Generator().manual_seed(0)
            out[backend] = plan_batch(
                m, _obs(3), _obs(3, 9), "dpm2", 5, cfg=1.2, generator=gen,
                speed=Speed(backend=backend),
            )  # fmt: skip
        for r, o in zip(out["torch"], out["fused"], strict=True):
            torch.testing.assert_close(o, r, rtol=0, atol=FUSED_ATOL)
    finally:
        torch.set_num_threads(threads)


# of 40 RBs: about twice the largest bf16 error documented (0.023 RB, docs/guide/realtime.md); this
# test measured 0.0076 RB on the CPU
BF16_ATOL_RBS = 0.05


def test_bf16_plans_stay_close_to_float32(models) -> None:
    obs = _obs(16)
    out = {}
    for bf16 in (False, True):
        gen = torch.Generator().manual_seed(0)
        out[bf16] = plan_batch(
            models, obs, obs, "dpm2", 10, 0.5, generator=gen, speed=Speed(bf16=bf16)
        )
    err = (out[True][0] - out[False][0]).abs().max()
    assert 0 < err < BF16_ATOL_RBS, float(err)  # bf16 really ran, and changed little
    assert (out[True][1] - out[False][1]).abs().max() < 0.1  # plans, in data stds


def test_actor_warm_starts_after_the_first_frame_of_each_episode(models, monkeypatch) -> None:
    import macdmp.planner.policy as pol

    seen = []
    real = pol.plan_batch

    def spy(*args, **kw):
        seen.append(kw["warm_from"] is not None)
        return real(*args, **kw)

    monkeypatch.setattr(pol, "plan_batch", spy)
    actor = PlannerActor(models, seed=3, steps=10, warm=0.3, guide_sigma=0.5)
    obs = _obs(5)
    for n in (5, 5, 5):
        if n == 5 and len(seen) == 0:
            actor.reset(5)
        actor.act(obs, obs)
    actor.reset(5)
    actor.act(obs, obs)
    actor.act(_obs(4), _obs(4))  # other agents: no previous plans to start from
    assert seen == [False, True, True, False, False]
    assert "warm 0.3" in actor.label and actor.describe()["guide_sigma"] == 0.5
    cold = PlannerActor(models, seed=3, steps=10)
    cold.reset(5)
    cold.act(obs, obs)
    cold.act(obs, obs)
    assert seen[-2:] == [False, False]  # warm=0 (the default): every frame from scratch


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(warm=1.5), "warm"),
        (dict(warm=0.3, solver="ddpm", steps=None), "warm"),
        (dict(guide_sigma=-1.0), "guide_sigma"),
        (dict(backend="tensorrt"), "backend"),
        (dict(backend="onnx", bf16=True), "backend"),
        (dict(backend="fused", compile=True), "backend"),
        (dict(backend="fused", solver="ddpm", steps=None), "backend"),
    ],
)
def test_actor_options_are_checked(models, opts, match) -> None:
    with pytest.raises(ValueError, match=match):
        PlannerActor(models, **opts)


def test_fused_refuses_the_classifier_gradient(models) -> None:
    """The fused graph traces no gradient: classifier guidance with a scale is refused before
    anything is exported (scale 0 is a plain unguided plan, which it takes)."""
    with pytest.raises(ValueError, match="backend: 'fused'.*classifier"):
        plan_batch(models, _obs(2), _obs(2), "dpm2", 5, 0.5, speed=Speed(backend="fused"))
