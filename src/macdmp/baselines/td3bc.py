"""MA-TD3+BC: TD3+BC (Fujimoto and Gu, NeurIPS 2021) per agent, parameters shared.

The actor maximises lambda Q while staying near the dataset action:
``-lambda * Q1(o, pi(o)) + (pi(o) - a)^2`` with lambda = alpha / mean |Q| (detached), alpha 2.5;
target policy smoothing (noise 0.2, clip 0.5), actor and target updates every 2 steps, tau
0.005, observations normalised by the dataset's mean and std. Decentralised: each agent acts on
its own observation alone. docs/baselines.md lists the settings and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass

from macdmp.baselines.td3 import TD3Base, TD3Config
from macdmp.methods.base import DEMO_SCHEDULE


@dataclass(frozen=True)
class TD3BCConfig(TD3Config):
    alpha: float = 2.5
    grad_clip: float = 100.0  # the reference clips nothing; the trainer always clips

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be > 0 (got {self.alpha})")


class MATD3BC(TD3Base):
    name = "ma-td3bc"
    label = "MA-TD3+BC"
    version = 1
    config_class = TD3BCConfig
    presets = {
        "paper": TD3BCConfig(n_epochs=100, steps_per_epoch=1000),
        "demo": TD3BCConfig(hidden=64, n_epochs=4, **DEMO_SCHEDULE),
    }
    loss_names = ("loss", "critic", "actor", "q", "bc")

    def loss(self, batch, generator=None):
        s, u, r, s2 = self.transition(batch)
        td, q1, _ = self.td_loss(s, u, r, s2, generator)
        pi = self.pi(s)
        q = self.q_frozen(s, pi)
        lam = self.cfg.alpha / q.abs().mean().detach().clamp(min=1e-6)
        bc = (pi - u).pow(2).mean()
        actor = -lam * q.mean() + bc
        loss = td + self.actor_mask() * actor
        return {"loss": loss, "critic": td, "actor": actor, "q": q1.mean(), "bc": bc}
