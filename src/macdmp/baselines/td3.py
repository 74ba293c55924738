"""TD3 for the offline baselines MA-CQL and MA-TD3+BC (decentralised, parameters shared).

Each agent is one sample: a transition (o_t, a_t, r_t, o_{t+1}) of its own, from a window of
two frames (x[:, 0], act[:, 0], rew[:, 0], x[:, 1]). The actor maps the agent's own normalised
observation to tanh(.) in [-1, 1], the demand (u + 1) / 2 x M x L RBs; the twin critics read
(observation, u). Rewards (-delay, ms) are divided by the dataset's per-frame reward std.

How TD3 lives with the one trainer (one Adam, one back-propagated loss, no host sync):
- the critic loss and the actor loss are summed; the actor's -Q is evaluated through the
  critic with detached parameters (``torch.func.functional_call``), the critic targets under
  ``no_grad``, so each loss only moves its own network;
- delayed actor updates: a step counter buffer, incremented in ``after_step``, gives a 0/1
  mask on the actor loss and on the target networks' Polyak weight. On masked steps the actor's
  gradient is zero but Adam still decays its moments and takes a (momentum) step: a deviation
  from TD3, where the actor's optimiser is not stepped at all;
- one learning rate for actor and critics (both 3e-4 in the references used here).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from macdmp.methods.base import Actor, Method, TrainConfig


def mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


def stat(stats: Mapping[str, Any], key: str, default: float | None = None) -> torch.Tensor:
    if key not in stats and default is not None:
        return torch.tensor(default, dtype=torch.float32)
    return torch.as_tensor(np.asarray(stats[key], dtype=np.float32))


@dataclass(frozen=True)
class TD3Config(TrainConfig):
    horizon: int = 2  # (o_t, a_t, r_t, o_{t+1})
    gamma: float = 0.99
    batch_size: int = 256
    lr: float = 3e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    ema_decay: float = 0.0  # the raw weights act (TD3 has its own target networks)
    ema_start: int = 0
    hidden: int = 256
    layers: int = 2
    tau: float = 0.005
    policy_noise: float = 0.2  # target policy smoothing, on the [-1, 1] action scale
    noise_clip: float = 0.5
    policy_delay: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.horizon != 2:
            raise ValueError(f"horizon: must be 2 (one transition; got {self.horizon})")
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1 (got {self.hidden})")
        if self.layers < 1:
            raise ValueError(f"layers: must be >= 1 (got {self.layers})")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau: must be in (0, 1] (got {self.tau})")
        if self.policy_noise < 0:
            raise ValueError(f"policy_noise: must be >= 0 (got {self.policy_noise})")
        if self.noise_clip < 0:
            raise ValueError(f"noise_clip: must be >= 0 (got {self.noise_clip})")
        if self.policy_delay < 1:
            raise ValueError(f"policy_delay: must be >= 1 (got {self.policy_delay})")


class TwinQ(nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.q1 = mlp(5, hidden, layers, 1)
        self.q2 = mlp(5, hidden, layers, 1)

    def forward(self, s: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([s, u[..., None]], dim=-1)
        return self.q1(z).squeeze(-1), self.q2(z).squeeze(-1)


class TD3Base(Method):
    """Shared networks, TD3 critic target, delayed actor mask and target updates."""

    loss_names = ("loss", "critic", "actor", "q")
    compile_modules = ("actor", "critic")

    def __init__(self, cfg: TD3Config, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.register_buffer("obs_mean", stat(stats, "obs_mean"))
        self.register_buffer("obs_std", stat(stats, "obs_std").clamp(min=1e-6))
        self.register_buffer("rew_std", stat(stats, "rew_std", 1.0).clamp(min=1e-6))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.actor = mlp(4, cfg.hidden, cfg.layers, 1)
        self.critic = TwinQ(cfg.hidden, cfg.layers)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "act", "rew")

    # -- pieces ------------------------------------------------------------------------------
    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def pi(self, s: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Normalised observations -> actions u in [-1, 1]."""
        net = self.actor_target if target else self.actor
        return torch.tanh(net(s).squeeze(-1))

    def to_u(self, rbs: torch.Tensor) -> torch.Tensor:
        return (2.0 * rbs / self.rbs - 1.0).clamp(-1.0, 1.0)

    def to_rbs(self, u: torch.Tensor) -> torch.Tensor:
        return (u + 1.0) * 0.5 * self.rbs

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observations (..., 4) -> demands in RBs, in [0, M x L]."""
        return self.to_rbs(self.pi(self.norm(obs)))

    def q_frozen(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Q1 with the critic's parameters detached: the actor's gradient only."""
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        return torch.func.functional_call(self.critic, params, (s, u))[0]

    def transition(self, batch: dict[str, torch.Tensor]):
        s, s2 = self.norm(batch["x"][:, 0]), self.norm(batch["x"][:, 1])
        return s, self.to_u(batch["act"][:, 0]), batch["rew"][:, 0] / self.rew_std, s2

    def smoothed(self, u: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        cfg = self.cfg
        eps = torch.randn(u.shape, generator=generator, device=u.device) * cfg.policy_noise
        return (u + eps.clamp(-cfg.noise_clip, cfg.noise_clip)).clamp(-1.0, 1.0)

    def td_loss(self, s, u, r, s2, generator):
        """TD3's clipped double-Q regression; returns (loss, Q1 of the data, Q2 of the data)."""
        with torch.no_grad():
            u2 = self.smoothed(self.pi(s2, target=True), generator)
            tq1, tq2 = self.critic_target(s2, u2)
            y = r + self.cfg.gamma * torch.minimum(tq1, tq2)
        q1, q2 = self.critic(s, u)
        return F.mse_loss(q1, y) + F.mse_loss(q2, y), q1, q2

    def actor_mask(self) -> torch.Tensor:
        return (self.updates % self.cfg.policy_delay == 0).float()

    def after_step(self) -> None:
        """Polyak-average the targets on actor steps (tau x mask), then count the step."""
        w = self.actor_mask() * self.cfg.tau
        for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            src, dst = list(net.parameters()), list(tgt.parameters())
            with torch.no_grad():
                delta = torch._foreach_sub(src, dst)
                torch._foreach_mul_(delta, w)
                torch._foreach_add_(dst, delta)
        self.updates += 1

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        if options:
            raise ValueError(f"{self.name} takes no options (got {sorted(options)})")
        return DeterministicActor(self)


class DeterministicActor(Actor):
    """Each agent's demand from its own observation alone (the mean field is not read)."""

    def __init__(self, model: TD3Base) -> None:
        self.model = model
        self.label = model.label

    @torch.inference_mode()
    def act(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.model.device)
        return self.model(o).clamp(0.0, self.model.rbs).double().cpu().numpy()
