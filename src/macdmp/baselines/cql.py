"""MA-CQL: TD3 with twin critics and the conservative Q penalty, per agent (OMAR's MA-CQL).

Every agent learns from its own transitions with parameters shared across agents and acts on
its own observation alone (decentralised training and execution, as in OMAR, Pan et al., ICML
2022). The critic loss is TD3's plus, for each critic, ``cql_alpha`` x (the soft maximum of Q
over sampled actions minus Q of the dataset action):

    T * logsumexp_j(Q(o, a_j) / T) - Q(o, a_data),   a_j: ``cql_samples`` uniform actions,
    as many policy actions at o and at o', each with Gaussian noise ``cql_noise``

(no importance weights: every sampled action counts alike). The actor is TD3's with OMAR's
1e-3 L2 penalty on its actions. docs/baselines.md lists the settings and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from macdmp.baselines.td3 import TD3Base, TD3Config
from macdmp.methods.base import DEMO_SCHEDULE


@dataclass(frozen=True)
class CQLConfig(TD3Config):
    grad_clip: float = 0.5  # OMAR's gradient clip (here the global norm)
    cql_alpha: float = 1.0  # penalty weight, from OMAR's grid {0.5, 1, 5}
    cql_samples: int = 10  # sampled actions of each kind
    cql_noise: float = 0.2  # Gaussian noise on the sampled policy actions
    cql_temp: float = 1.0  # the log-sum-exp's temperature
    act_l2: float = 1e-3  # OMAR's L2 on the actor's actions

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cql_alpha < 0:
            raise ValueError(f"cql_alpha: must be >= 0 (got {self.cql_alpha})")
        if self.cql_samples < 1:
            raise ValueError(f"cql_samples: must be >= 1 (got {self.cql_samples})")
        if self.cql_noise < 0:
            raise ValueError(f"cql_noise: must be >= 0 (got {self.cql_noise})")
        if not self.cql_temp > 0:
            raise ValueError(f"cql_temp: must be > 0 (got {self.cql_temp})")
        if self.act_l2 < 0:
            raise ValueError(f"act_l2: must be >= 0 (got {self.act_l2})")


class MACQL(TD3Base):
    name = "ma-cql"
    label = "MA-CQL"
    version = 1
    config_class = CQLConfig
    presets = {
        "paper": CQLConfig(n_epochs=100, steps_per_epoch=1000),
        "demo": CQLConfig(hidden=64, n_epochs=4, **DEMO_SCHEDULE),
    }
    loss_names = ("loss", "critic", "actor", "q", "cql")

    def loss(self, batch, generator=None):
        cfg = self.cfg
        s, u, r, s2 = self.transition(batch)
        td, q1, q2 = self.td_loss(s, u, r, s2, generator)
        # the conservative penalty over sampled actions (no gradient into the actor)
        b, n, dev = s.shape[0], cfg.cql_samples, s.device
        with torch.no_grad():
            rand = torch.rand((b, n), generator=generator, device=dev) * 2.0 - 1.0
            cur = self.pi(s)[:, None].expand(b, n)
            nxt = self.pi(s2)[:, None].expand(b, n)
            noisy = torch.cat([cur, nxt], dim=1)
            eps = torch.randn(noisy.shape, generator=generator, device=dev) * cfg.cql_noise
            acts = torch.cat([rand, (noisy + eps).clamp(-1.0, 1.0)], dim=1)  # (B, 3n)
        s_rep = s[:, None].expand(b, 3 * n, s.shape[-1])
        cq1, cq2 = self.critic(s_rep, acts)
        t = cfg.cql_temp
        pen = lambda cq, q: (t * torch.logsumexp(cq / t, dim=1) - q).mean()  # noqa: E731
        cql = pen(cq1, q1) + pen(cq2, q2)
        critic = td + cfg.cql_alpha * cql
        pi = self.pi(s)
        actor = -self.q_frozen(s, pi).mean() + cfg.act_l2 * pi.pow(2).mean()
        loss = critic + self.actor_mask() * actor
        return {"loss": loss, "critic": td, "actor": actor, "q": q1.mean(), "cql": cql}
