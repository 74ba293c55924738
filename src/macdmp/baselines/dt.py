"""MA-DT: a Decision Transformer (Chen et al., NeurIPS 2021) per agent, parameters shared.

Each agent's last K frames are a sequence of interleaved tokens (return-to-go R_t, observation
o_t, action a_t); a causal transformer predicts a_t from the hidden state of o_t's token.
Training windows are K frames of one agent with ``rtg``, the undiscounted sum of its rewards
from each frame to the end of its trajectory (``macdmp.data.windows``).

Execution. The actor keeps each agent's context (batched over agents; ``reset`` clears it every
episode) and starts every agent at the same target return G_0 (option ``target``, ms, <= 0;
default: the dataset's ``rtg_start_best``, the 90th percentile of the trajectories' whole
returns, i.e. better than 90% of the (trajectory, agent) pairs of the data). After each frame
R is decremented by the frame's reward. The actor is given observations only, and the reward
(minus the mean delay of the packets delivered to the node) is not among them, so the reward
is an estimate: a small reward model r(o_t, a_t, o_{t+1}), trained jointly on the same windows
(loss key ``rew``), from the agent's own observations and action. R is kept <= 0.

Settings follow the reference code (K 20, embedding 128, 3 layers, 1 head, dropout 0.1,
learning rate 1e-4 with linear warm-up, gradient clip 0.25); the differences forced by the
trainer and by the task are in docs/baselines.md (Adam, not AdamW; learned position embeddings
over the context instead of absolute timestep embeddings; no attention-weight dropout).
Dropout draws from the trainer's generator, so a resumed run draws what it would have drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from macdmp.baselines.td3 import mlp, stat
from macdmp.methods.base import DEMO_SCHEDULE, Actor, Method, TrainConfig


@dataclass(frozen=True)
class DTConfig(TrainConfig):
    horizon: int = 20  # K: the context, in frames
    batch_size: int = 64
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 10_000
    grad_clip: float = 0.25
    ema_decay: float = 0.0  # the raw weights act, as in the reference
    ema_start: int = 0
    embed: int = 128
    layers: int = 3
    heads: int = 1
    dropout: float = 0.1
    reward_hidden: int = 64  # the reward model that decrements R at execution

    def __post_init__(self) -> None:
        super().__post_init__()
        need = [
            (self.horizon >= 2, "horizon", ">= 2"),
            (self.embed >= 1, "embed", ">= 1"),
            (self.layers >= 1, "layers", ">= 1"),
            (self.heads >= 1 and self.embed % self.heads == 0, "heads", ">= 1, dividing embed"),
            (0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)"),
            (self.reward_hidden >= 1, "reward_hidden", ">= 1"),
        ]
        for ok, name, allowed in need:
            if not ok:
                raise ValueError(f"{name}: must be {allowed} (got {getattr(self, name)!r})")


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawing from ``generator``; none without one (execution)."""
    if generator is None or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


class Block(nn.Module):
    def __init__(self, embed: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(embed), nn.LayerNorm(embed)
        self.qkv, self.proj = nn.Linear(embed, 3 * embed), nn.Linear(embed, embed)
        self.mlp = nn.Sequential(
            nn.Linear(embed, 4 * embed), nn.GELU(), nn.Linear(4 * embed, embed)
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, n, e = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, e // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + _dropout(self.proj(y.transpose(1, 2).reshape(b, n, e)), self.p, generator)
        return x + _dropout(self.mlp(self.ln2(x)), self.p, generator)


class MADT(Method):
    name = "ma-dt"
    label = "MA-DT"
    version = 1
    config_class = DTConfig
    presets = {
        "paper": DTConfig(n_epochs=100, steps_per_epoch=1000),
        "demo": DTConfig(
            embed=64,
            layers=2,
            warmup_steps=100,
            n_epochs=4,
            **DEMO_SCHEDULE,
        ),
    }
    loss_names = ("loss", "act", "rew")
    actor_options = {"target": ("target", float)}

    def __init__(self, cfg: DTConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.register_buffer("obs_mean", stat(stats, "obs_mean"))
        self.register_buffer("obs_std", stat(stats, "obs_std").clamp(min=1e-6))
        self.register_buffer("rew_std", stat(stats, "rew_std", 1.0).clamp(min=1e-6))
        self.register_buffer("rtg_std", stat(stats, "rtg_std", 1.0).clamp(min=1e-6))
        self.register_buffer("rtg_target", stat(stats, "rtg_start_best", 0.0))
        e = cfg.embed
        self.emb_rtg, self.emb_obs, self.emb_act = nn.Linear(1, e), nn.Linear(4, e), nn.Linear(1, e)
        self.pos = nn.Parameter(torch.zeros(3 * cfg.horizon, e))
        nn.init.normal_(self.pos, std=0.02)
        self.ln_in, self.ln_out = nn.LayerNorm(e), nn.LayerNorm(e)
        self.blocks = nn.ModuleList(Block(e, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.head = nn.Linear(e, 1)
        self.reward = mlp(9, cfg.reward_hidden, 2, 1)

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "act", "rew", "rtg")

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def to_u(self, rbs: torch.Tensor) -> torch.Tensor:
        return (2.0 * rbs / self.rbs - 1.0).clamp(-1.0, 1.0)

    def forward(
        self,
        rtg: torch.Tensor,
        s: torch.Tensor,
        u: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B, L) returns-to-go (ms), (B, L, 4) normalised observations, (B, L) actions in
        [-1, 1] -> (B, L) predicted actions in [-1, 1], a_t from the tokens up to o_t."""
        b, n = u.shape
        tok = torch.stack(
            [
                self.emb_rtg((rtg / self.rtg_std)[..., None]),
                self.emb_obs(s),
                self.emb_act(u[..., None]),
            ],
            dim=2,
        ).reshape(b, 3 * n, -1)
        h = _dropout(self.ln_in(tok + self.pos[: 3 * n]), self.cfg.dropout, generator)
        for blk in self.blocks:
            h = blk(h, generator)
        h = self.ln_out(h).view(b, n, 3, -1)[:, :, 1]  # the observation tokens
        return torch.tanh(self.head(h).squeeze(-1))

    def reward_of(self, s: torch.Tensor, u: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Estimated reward (ms) of the frame from o_t, a_t and o_{t+1} (normalised)."""
        z = torch.cat([s, u[..., None], s2], dim=-1)
        return self.reward(z).squeeze(-1) * self.rew_std

    def loss(self, batch, generator=None):
        s, u = self.norm(batch["x"]), self.to_u(batch["act"])
        pred = self(batch["rtg"], s, u, generator)
        act = (pred - u).pow(2).mean()
        r_hat = self.reward_of(s[:, :-1], u[:, :-1], s[:, 1:])
        rew = ((r_hat - batch["rew"][:, :-1]) / self.rew_std).pow(2).mean()
        return {"loss": act + rew, "act": act, "rew": rew}

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        unknown = sorted(set(options) - {"target"})
        if unknown:
            raise ValueError(f"ma-dt takes the option target only (got {unknown})")
        target = options.get("target")
        if target is not None and not (np.isfinite(target) and target <= 0):
            raise ValueError(f"target: the target return must be <= 0 ms (got {target})")
        return DTActor(self, target)


class DTActor(Actor):
    """Every agent's context of the last K frames, batched over agents, reset every episode."""

    label = "MA-DT"

    def __init__(self, model: MADT, target: float | None = None) -> None:
        self.model = model
        self.target = float(model.rtg_target) if target is None else float(target)
        self.reset(0)

    def reset(self, n_agents: int) -> None:
        dev = self.model.device
        self.rtg = torch.zeros((n_agents, 0), device=dev)
        self.obs = torch.zeros((n_agents, 0, 4), device=dev)
        self.act_u = torch.zeros((n_agents, 0), device=dev)
        self.frames = 0

    @torch.inference_mode()
    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        m = self.model
        s = m.norm(torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=m.device))
        if s.shape[0] != self.rtg.shape[0]:
            raise ValueError(f"act: {s.shape[0]} agents, but reset for {self.rtg.shape[0]}")
        if self.frames == 0:
            g = torch.full((s.shape[0],), self.target, device=m.device)
        else:  # R_t = R_{t-1} - r_{t-1}, the reward estimated from the agent's own frames
            r = m.reward_of(self.obs[:, -1], self.act_u[:, -1], s)
            g = (self.rtg[:, -1] - r).clamp(max=0.0)
        k = m.cfg.horizon
        self.rtg = torch.cat([self.rtg, g[:, None]], dim=1)[:, -k:]
        self.obs = torch.cat([self.obs, s[:, None]], dim=1)[:, -k:]
        pad = torch.zeros_like(g)[:, None]  # a_t is predicted before it is known
        u = m(self.rtg, self.obs, torch.cat([self.act_u, pad], dim=1)[:, -k:])[:, -1]
        self.act_u = torch.cat([self.act_u, u[:, None]], dim=1)[:, -k:]
        self.frames += 1
        return ((u + 1.0) * 0.5 * m.rbs).clamp(0.0, m.rbs).double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "target": self.target}
