"""Network backbones: a temporal U-Net (noise model) and its down-sampling half (return head).

Both take a batch of sequences laid out as (B, H, C), time along H and features (own observation,
then mean-field observation) along C, and an integer diffusion index k in [0, K). They know nothing
about the diffusion process; schedules and samplers live in :mod:`macdmp.diffusion.schedule` and
:mod:`macdmp.diffusion.sampler`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn


def check_unet_shape(
    horizon: int, dim: int, dim_mults: Sequence[int], kernel_size: int, groups: int
) -> None:
    """Raise ValueError (naming the field) when the U-Net cannot be built for these settings."""
    if dim < 1:
        raise ValueError(f"dim: must be >= 1 (got {dim})")
    if len(dim_mults) < 1 or any(int(m) < 1 for m in dim_mults):
        raise ValueError(f"dim_mults: must be a non-empty list of integers >= 1 (got {dim_mults})")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: must be an odd integer >= 1 (got {kernel_size})")
    bad = [dim * m for m in dim_mults if (dim * m) % groups != 0]
    if groups < 1 or bad:
        raise ValueError(
            f"groups: must divide every channel width dim * mult = "
            f"{[dim * m for m in dim_mults]} (got groups={groups})"
        )
    factor = 2 ** (len(dim_mults) - 1)
    if horizon < factor or horizon % factor != 0:
        raise ValueError(
            f"horizon: with {len(dim_mults)} levels the U-Net halves the sequence "
            f"{len(dim_mults) - 1} times, so horizon must be a positive multiple of {factor} "
            f"(got {horizon})"
        )


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal features of the diffusion index, as in the Transformer position code."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        arg = k.float()[:, None] * self.freqs[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


def condition_keep(
    batch: int, dropout: float, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """A (batch,) float mask for classifier-free guidance training: each row's condition is
    kept with probability 1 - ``dropout`` (drawn from ``generator``; no host sync)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"condition_dropout: must be in [0, 1) (got {dropout})")
    u = torch.rand((batch,), generator=generator, device=device)
    return (u >= dropout).float()


class ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish over the time axis."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, c_out),
            nn.Mish(),
        )


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks with the embedding added after the first, plus a residual path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvBlock(c_in, c_out, kernel_size, groups)
        self.conv2 = ConvBlock(c_out, c_out, kernel_size, groups)
        self.emb = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        """``proj``: this block's projection of the embedding (its ``emb`` layers' output),
        which the backbone computes for every block at once (:func:`project_embeddings`)."""
        h = self.conv1(x) + proj[:, :, None]
        return self.conv2(h) + self.skip(x)


def project_embeddings(
    blocks: Sequence[ResidualTemporalBlock], emb: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Every block's projection of the embedding (Mish, then the block's Linear) in one matrix
    product over the blocks' Linear layers side by side: the same parameters and the same
    values, but two kernels forward and a few backward instead of some per block, which on a
    GPU is most of their cost (the batch is 64 rows)."""
    lins = [b.emb[1] for b in blocks]
    weight = torch.cat([lin.weight for lin in lins])
    bias = torch.cat([lin.bias for lin in lins])
    out = nn.functional.linear(nn.functional.mish(emb), weight, bias)
    return out.split([lin.out_features for lin in lins], dim=1)


class _Embedding(nn.Module):
    """Time embedding (sinusoid + 2-layer MLP), optionally joined by a condition embedding."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.time = nn.Sequential(
            SinusoidalEmbedding(dim), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim)
        )
        self.cond_dim = cond_dim
        self.cond = (
            nn.Sequential(nn.Linear(cond_dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))
            if cond_dim > 0
            else None
        )
        self.out_dim = dim * (2 if cond_dim > 0 else 1)

    def forward(
        self, k: torch.Tensor, cond: torch.Tensor | None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        t = self.time(k)
        if self.cond is None:
            if cond is not None or keep is not None:
                raise ValueError("cond: this backbone was built with cond_dim=0; pass cond=None")
            return t
        if cond is None or cond.shape[-1] != self.cond_dim:
            raise ValueError(f"cond: expected a (B, {self.cond_dim}) tensor")
        c = self.cond(cond)
        if keep is not None:
            # Classifier-free guidance: keep = 0 drops the condition (the unconditional model),
            # as Decision Diffuser multiplies its returns embedding by a Bernoulli mask.
            c = c * keep.to(c.dtype)[:, None]
        return torch.cat([t, c], dim=-1)


class _DownPath(nn.Module):
    """The encoder: per level two residual blocks, then a stride-2 conv except at the last level."""

    def __init__(
        self, in_ch: int, dim: int, mults: Sequence[int], emb_dim: int, kernel: int, groups: int
    ) -> None:
        super().__init__()
        widths = [in_ch] + [dim * m for m in mults]
        self.levels = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = i == len(mults) - 1
            self.levels.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(c_in, c_out, emb_dim, kernel, groups),
                        ResidualTemporalBlock(c_out, c_out, emb_dim, kernel, groups),
                        nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1),
                    ]
                )
            )
        self.out_ch = widths[-1]

    def blocks(self) -> list[ResidualTemporalBlock]:
        return [b for level in self.levels for b in level[:2]]

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor, projs: Iterator[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``projs``: the blocks' embedding projections in order (the U-Net's, which goes on
        with the rest); by default computed here, all at once."""
        projs = projs if projs is not None else iter(project_embeddings(self.blocks(), emb))
        skips = []
        for block1, block2, down in self.levels:
            h = block2(block1(h, next(projs)), next(projs))
            skips.append(h)
            h = down(h)
        return h, skips


class _Stem(nn.Module):
    """What the U-Net and its down-sampling half share: the shape check, the embedding of the
    diffusion index (and condition) and the down path (``embed`` and ``down`` in state dicts)."""

    def __init__(
        self,
        horizon: int,
        channels: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 5,
        groups: int = 8,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        check_unet_shape(horizon, dim, dim_mults, kernel_size, groups)
        self.shape = (horizon, channels, dim, tuple(dim_mults), kernel_size, groups)
        self.embed = _Embedding(dim, cond_dim)
        self.down = _DownPath(channels, dim, dim_mults, self.embed.out_dim, kernel_size, groups)


class TemporalUNet(_Stem):
    """eps_theta: a 1-D U-Net over the horizon with len(dim_mults) down- and up-sampling levels.

    Input and output are (B, H, C). The diffusion index (and an optional condition vector) is
    embedded and added after the first temporal convolution of every residual block. With
    ``cond_dim`` > 0, ``keep`` (B,) (1 keeps, 0 drops each row's condition) gives the
    unconditional model of classifier-free guidance: train with a random keep mask
    (:func:`condition_keep`), sample with :func:`macdmp.diffusion.sampler.sample`'s
    ``condition`` and ``cfg``. ``unet``: dim, dim_mults, kernel_size, groups, cond_dim (the
    defaults of the shared stem: 32, (1, 2, 4, 8), 5, 8, 0).
    """

    def __init__(self, horizon: int, channels: int, **unet: Any) -> None:
        super().__init__(horizon, channels, **unet)
        _, _, dim, dim_mults, kernel_size, groups = self.shape
        e = self.embed.out_dim
        mid = self.down.out_ch
        self.mid1 = ResidualTemporalBlock(mid, mid, e, kernel_size, groups)
        self.mid2 = ResidualTemporalBlock(mid, mid, e, kernel_size, groups)
        widths = [dim * m for m in dim_mults]
        self.up = nn.ModuleList()
        # Up levels mirror the down levels; each takes the skip from the same resolution.
        for i in reversed(range(len(widths))):
            c_skip = widths[i]
            c_in = widths[min(i + 1, len(widths) - 1)]
            c_out = widths[i]
            self.up.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(c_in + c_skip, c_out, e, kernel_size, groups),
                        ResidualTemporalBlock(c_out, c_out, e, kernel_size, groups),
                        nn.Identity()
                        if i == 0
                        else nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = nn.Sequential(
            ConvBlock(dim, dim, kernel_size, groups), nn.Conv1d(dim, channels, 1)
        )

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        cond: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.embed(k, cond, keep)
        projs = iter(project_embeddings(self.blocks(), emb))
        h, skips = self.down(x.transpose(1, 2), emb, projs)
        h = self.mid2(self.mid1(h, next(projs)), next(projs))
        for (block1, block2, up), skip in zip(self.up, reversed(skips), strict=True):
            h = block2(block1(torch.cat([h, skip], dim=1), next(projs)), next(projs))
            h = up(h)
        return self.final(h).transpose(1, 2)

    def blocks(self) -> list[ResidualTemporalBlock]:
        """The residual blocks in the order the forward pass runs them."""
        ups = [b for level in self.up for b in level[:2]]
        return [*self.down.blocks(), self.mid1, self.mid2, *ups]


class HalfUNet(_Stem):
    """J_psi: the down-sampling half of :class:`TemporalUNet` and a linear head to one scalar;
    ``unet`` as the U-Net's."""

    def __init__(self, horizon: int, channels: int, **unet: Any) -> None:
        super().__init__(horizon, channels, **unet)
        dim_mults = self.shape[3]
        length = horizon // 2 ** (len(dim_mults) - 1)
        self.head = nn.Linear(self.down.out_ch * length, 1)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        h, _ = self.down(x.transpose(1, 2), self.embed(k, cond))
        return self.head(h.flatten(1)).squeeze(-1)


class AgentAttention(nn.Module):
    """Self-attention across the agents of one sample, per time step, with a residual path.

    Input (B, N, C, T) features and a (B, N) mask of real agents: padded agents are never keys
    or values, so they cannot influence a real agent's output (their own rows are computed and
    must be ignored by the caller).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads != 0:
            raise ValueError(f"heads: must be >= 1 and divide {channels} (got {heads})")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c, t = h.shape
        tok = h.permute(0, 3, 1, 2).reshape(b * t, n, c)  # agents are the tokens
        q, k, v = self.qkv(self.norm(tok)).view(b * t, n, 3, self.heads, c // self.heads).unbind(2)
        keys = (mask > 0).repeat_interleave(t, dim=0)[:, None, None, :]  # (B*T, 1, 1, N)
        y = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keys
        )
        y = self.out(y.transpose(1, 2).reshape(b * t, n, c))
        return h + y.view(b, t, n, c).permute(0, 2, 3, 1)


class AgentAttentionUNet(TemporalUNet):
    """MADiff's noise model: one :class:`TemporalUNet` shared by every agent, with attention
    between the agents on each skip connection (after each down level, before the up path
    reads it). Input and output (B, N, H, C) with a (B, N) mask of real agents; no agent
    index is embedded, so the model is equivariant to the order of the agents. ``heads``:
    attention heads; ``unet`` as :class:`TemporalUNet`'s.
    """

    def __init__(self, horizon: int, channels: int, heads: int = 4, **unet: Any) -> None:
        super().__init__(horizon, channels, **unet)
        dim, dim_mults = self.shape[2], self.shape[3]
        self.attn = nn.ModuleList(AgentAttention(dim * m, heads) for m in dim_mults)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        mask: torch.Tensor,
        cond: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, h, c = x.shape
        emb = self.embed(k, cond, keep).repeat_interleave(n, dim=0)  # one row per agent
        projs = iter(project_embeddings(self.blocks(), emb))
        z, skips = self.down(x.reshape(b * n, h, c).transpose(1, 2), emb, projs)
        skips = [
            att(s.view(b, n, *s.shape[1:]), mask).reshape(b * n, *s.shape[1:])
            for att, s in zip(self.attn, skips, strict=True)
        ]
        z = self.mid2(self.mid1(z, next(projs)), next(projs))
        for (block1, block2, up), skip in zip(self.up, reversed(skips), strict=True):
            z = block2(block1(torch.cat([z, skip], dim=1), next(projs)), next(projs))
            z = up(z)
        return self.final(z).transpose(1, 2).reshape(b, n, h, c)
