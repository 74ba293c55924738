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
                   condition=cond, cfg_weight=w, generator=gen)  # fmt: skip
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
    b = sample(eps, sch, (5, 4, 2), generator=g(), cfg_weight=1.0)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="cfg_weight"):
        sample(eps, sch, (5, 4, 2), cfg_weight=2.0)
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
