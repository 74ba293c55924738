"""Backbones, schedules and samplers, tested without training: shapes, the conditioning mask,
and the samplers against the exact noise model of a Gaussian (whose optimum is closed-form)."""

from __future__ import annotations

import pytest
import torch

from macdmp.diffusion import (
    AgentAttentionUNet,
    Conditioning,
    HalfUNet,
    NoiseSchedule,
    TemporalUNet,
    dpm_levels,
    make_betas,
    sample,
)
from macdmp.diffusion.backbones import ResidualTemporalBlock


@pytest.mark.parametrize("horizon", [8, 16, 32])
def test_unet_and_half_unet_shapes(horizon: int) -> None:
    unet = TemporalUNet(horizon, 8, dim=16, dim_mults=(1, 2, 4, 8), kernel_size=5, groups=8)
    head = HalfUNet(horizon, 8, dim=16, dim_mults=(1, 2, 4, 8), kernel_size=5, groups=8)
    x = torch.randn(3, horizon, 8)
    k = torch.tensor([0, 5, 19])
    assert unet(x, k).shape == (3, horizon, 8)
    assert head(x, k).shape == (3,)


def test_unet_levels_and_condition_embedding() -> None:
    unet = TemporalUNet(16, 4, dim=8, dim_mults=(1, 2, 4, 8), groups=4, cond_dim=3)
    assert len(unet.down.levels) == 4 and len(unet.up) == 4
    x, k = torch.randn(2, 16, 4), torch.tensor([1, 2])
    c = torch.randn(2, 3)
    assert not torch.allclose(unet(x, k, c), unet(x, k, c + 1))
    with pytest.raises(ValueError, match="cond"):
        unet(x, k)


@pytest.mark.parametrize("backbone", ["unet", "half", "agents"])
def test_each_block_gets_its_own_embedding_projection(backbone: str) -> None:
    """The backbones project the embedding for every residual block in one matrix product
    (``project_embeddings``): each block must get exactly what its own ``emb`` layers give, and
    the blocks must run in the order that product lays them out."""
    torch.manual_seed(0)
    shape = {"dim": 8, "dim_mults": (1, 2, 4), "groups": 4, "cond_dim": 2}
    x, k, c = torch.randn(3, 8, 4), torch.tensor([0, 3, 7]), torch.randn(3, 2)
    if backbone == "unet":
        net, args = TemporalUNet(8, 4, **shape), (x, k, c)
    elif backbone == "half":
        net, args = HalfUNet(8, 4, **shape), (x, k, c)
    else:
        net = AgentAttentionUNet(8, 4, heads=2, **shape)
        args = (x.view(1, 3, 8, 4), k[:1], torch.ones(1, 3), c[:1])
    seen: list[tuple[ResidualTemporalBlock, tuple]] = []
    blocks = [m for m in net.modules() if isinstance(m, ResidualTemporalBlock)]
    for b in blocks:
        b.register_forward_pre_hook(lambda m, a: seen.append((m, a)))
    fed: list[torch.Tensor] = []  # the embedding the backbone computed (one row per item)
    net.embed.register_forward_hook(lambda m, a, out: fed.append(out))
    with torch.no_grad():
        net(*args)
        emb = fed[0].repeat_interleave(3 if backbone == "agents" else 1, dim=0)  # per agent
        order = net.down.blocks() if backbone == "half" else net.blocks()
        assert [m for m, _ in seen] == order
        assert sorted(map(id, order)) == sorted(map(id, blocks))
        for m, (_, proj) in seen:
            torch.testing.assert_close(proj, m.emb(emb), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"horizon": 12}, "horizon"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"groups": 5}, "groups"),
        ({"dim_mults": ()}, "dim_mults"),
    ],
)
def test_unet_rejects_bad_shapes(kwargs: dict, field: str) -> None:
    args = {
        "horizon": 16,
        "channels": 8,
        "dim": 16,
        "dim_mults": (1, 2, 4, 8),
        "kernel_size": 5,
        "groups": 8,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}"):
        TemporalUNet(**args)


def test_schedules() -> None:
    for kind in ("cosine", "linear"):
        b = make_betas(50, kind)
        assert b.shape == (50,) and (b > 0).all() and (b < 1).all()
    s = NoiseSchedule(20)
    assert s.posterior_var[0] == 0  # Sigma_1 = 0: no noise and no guidance at the last step
    assert s.alpha_bars[-1] < 1e-3
    with pytest.raises(ValueError, match="beta_schedule"):
        make_betas(10, "quadratic")


def test_dpm_levels() -> None:
    sch = NoiseSchedule(100)
    lv = dpm_levels(sch, 10)
    assert lv[-1] == 0 and len(lv) == 11
    assert all(a > b for a, b in zip(lv, lv[1:], strict=False))
    # the start is the top level whose signal coefficient is still >= 0.1, not level K
    top = lv[0]
    assert sch.ode_alpha[top] >= 0.1 > sch.ode_alpha[top + 1]
    assert dpm_levels(NoiseSchedule(20), 18) == list(range(18, -1, -1))
    with pytest.raises(ValueError, match="steps"):
        dpm_levels(NoiseSchedule(20), 20)


MU = torch.tensor([1.5, -0.5, 0.0, 0.7])
SD = torch.tensor([0.5, 1.0, 1.5, 0.8])


def gaussian_eps(s: NoiseSchedule):
    """The exact eps(x_k) for data ~ N(MU, diag SD^2): sigma (x - a MU) / (a^2 SD^2 + sigma^2)."""

    def eps(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a = s.sqrt_abar[idx].view(-1, 1, 1)
        sg = s.sqrt_1m_abar[idx].view(-1, 1, 1)
        return sg * (x - a * MU) / (a * a * SD * SD + sg * sg)

    return eps


# (solver, steps, relative tolerance on the std): few-step ODE solvers lose some variance
# (the last jump to sigma = 0 returns E[x_0 | x_s]); these bounds are what they achieve.
EXACT_CASES = [
    ("ddpm", None, 0.10),
    ("dpm1", 50, 0.10),
    ("dpm2", 20, 0.10),
    ("dpm2", 10, 0.15),
    ("dpm1", 10, 0.25),
]


@pytest.mark.parametrize("solver, steps, std_tol", EXACT_CASES)
def test_samplers_match_gaussian_with_exact_model(solver: str, steps, std_tol: float) -> None:
    s = NoiseSchedule(100)
    z = sample(
        gaussian_eps(s),
        s,
        (4000, 4, 4),
        solver=solver,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    z = z.reshape(-1, 4)
    # The DPM solvers start from N(0, I) at the top level with alpha >= 0.1 (sampler.py), which
    # drops up to alpha * MU of the mean there: data far from the normaliser's zero mean pay
    # up to 10% of their mean. DDPM starts at level K and pays nothing.
    mean_tol = 0.05 + (0.1 * MU.abs() if solver != "ddpm" else 0.0)
    assert ((z.mean(0) - MU).abs() <= mean_tol).all(), z.mean(0)
    assert torch.allclose(z.std(0) / SD, torch.ones(4), atol=std_tol)


@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm1", 7), ("dpm2", 7)])
def test_pinned_entries_never_move(solver: str, steps) -> None:
    s = NoiseSchedule(20)
    first = torch.randn(5, 4)
    cond = Conditioning.first_step(first, 8)
    seen: list[torch.Tensor] = []

    def eps(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        seen.append(x[:, 0].clone())  # what the model is shown at every step
        return torch.randn_like(x) * 3  # a bad model pushes everything around

    def value(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (x**2).sum(dim=(1, 2))

    z = sample(
        eps,
        s,
        (5, 8, 4),
        solver=solver,
        steps=steps,
        cond=cond,
        value=value,
        guide=5.0,
        generator=torch.Generator().manual_seed(1),
    )
    assert len(seen) == (steps or 20)
    for v in seen:
        assert torch.equal(v, first)
    assert torch.equal(z[:, 0], first)
    assert not torch.equal(z[:, 1], torch.zeros_like(z[:, 1]))


@pytest.mark.parametrize("solver, steps", [("ddpm", None), ("dpm1", 10), ("dpm2", 10)])
def test_guidance_moves_samples_up_the_value(solver: str, steps) -> None:
    s = NoiseSchedule(50)
    target = torch.full((4,), 2.0)

    def value(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return -((x - target) ** 2).sum(dim=(1, 2))

    def run(scale: float) -> torch.Tensor:
        z = sample(
            gaussian_eps(s),
            s,
            (500, 4, 4),
            solver=solver,
            steps=steps,
            value=value,
            guide=scale,
            clip_x0=5.0,
            generator=torch.Generator().manual_seed(0),
        )
        return value(z, torch.zeros(500, dtype=torch.long)).mean()

    assert run(0.5) > run(0.0) + 1.0


def test_sample_validates_arguments() -> None:
    s = NoiseSchedule(20)

    def eps(x, idx):
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match="solver"):
        sample(eps, s, (1, 8, 4), solver="ddim")
    with pytest.raises(ValueError, match="steps"):
        sample(eps, s, (1, 8, 4), solver="ddpm", steps=10)
    with pytest.raises(ValueError, match="steps"):
        sample(eps, s, (1, 8, 4), solver="dpm2", steps=21)
    with pytest.raises(ValueError, match="guide"):
        sample(eps, s, (1, 8, 4), guide=1.0)


def test_sampling_is_reproducible_with_a_generator() -> None:
    s = NoiseSchedule(20)
    eps = gaussian_eps(s)
    a = sample(eps, s, (3, 4, 4), generator=torch.Generator().manual_seed(5))
    b = sample(eps, s, (3, 4, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_a_cached_graph_goes_with_the_module_whose_id_keys_it():
    """Graphs are cached by id(models); once the models are collected their entries must be
    gone, or a new object with the same id would replay a graph reading freed weights."""
    import gc

    from macdmp.diffusion.graphs import forget_with

    cache: dict = {}
    owner = torch.nn.Linear(2, 2)
    key = ("plan", id(owner), (4, 8, 8))
    cache[key] = object()
    forget_with(owner, cache, key)
    cache[("other",)] = object()
    gc.collect()
    assert key in cache  # alive: kept
    del owner
    gc.collect()
    assert list(cache) == [("other",)]
