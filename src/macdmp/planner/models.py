"""MA-CDMP's three models (noise model, return classifier, inverse dynamics), the normaliser and
the configuration they are built from. Raw units go in and out; normalisation happens inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from macdmp.diffusion.backbones import HalfUNet, TemporalUNet, check_unet_shape, condition_keep
from macdmp.diffusion.sampler import Conditioning
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule
from macdmp.methods.base import Actor, Method, TrainConfig
from macdmp.planner.plan import GUIDANCE

STAT_KEYS = (
    "obs_mean",
    "obs_std",
    "mf_mean",
    "mf_std",
    "act_mean",
    "act_std",
    "ret_mean",
    "ret_std",
)
RET_BEST_FALLBACK_Z = 1.2816  # the 90% quantile of a normal, when a source has no ret_best


@dataclass(frozen=True)
class PlannerConfig(TrainConfig):
    """MA-CDMP's configuration: the common training fields plus its models; validated when
    built."""

    obs_dim: int = 4
    use_mf: bool = True
    # backbones (Diffuser's reference settings)
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 5
    groups: int = 8
    inv_hidden: int = 256
    inv_layers: int = 2
    # diffusion
    n_diffusion_steps: int = 100
    beta_schedule: str = "cosine"
    # loss weights of Eq. 19
    w_inv: float = 1.0
    w_diff: float = 1.0
    w_cls: float = 1.0
    # "classifier": the paper's classifier guidance (Eq. 20). "cfg": classifier-free guidance on
    # the return: the noise model also takes the normalised horizon return y (the classifier's
    # target), dropped for a fraction cond_dropout of the windows (the unconditional model).
    # The classifier is trained either way (candidate ranking, guidance=classifier).
    guidance: str = "classifier"
    cond_dropout: float = 0.25  # Decision Diffuser's reference; only read with guidance="cfg"
    # acting default of the planner option `warm` (macdmp.planner.policy): 0 plans every frame
    # from scratch (the paper's Algorithm 2); a run folder's actor uses this unless told
    # otherwise (`--policy RUN,warm=F`). Not read in training.
    warm: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        super().__post_init__()

        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name}: must be {allowed} (got {getattr(self, name)!r})")

        need(self.obs_dim >= 1, "obs_dim", ">= 1")
        check_unet_shape(self.horizon, self.dim, self.dim_mults, self.kernel_size, self.groups)
        need(self.horizon >= 2, "horizon", ">= 2 (a plan needs o_t and o_t+1)")
        need(self.inv_hidden >= 1, "inv_hidden", ">= 1")
        need(self.inv_layers >= 1, "inv_layers", ">= 1")
        need(self.n_diffusion_steps >= 2, "n_diffusion_steps", ">= 2")
        need(self.beta_schedule in SCHEDULES, "beta_schedule", f"one of {SCHEDULES}")
        for w in ("w_inv", "w_diff", "w_cls"):
            need(getattr(self, w) >= 0, w, ">= 0")
        need(self.guidance in GUIDANCE, "guidance", f"one of {GUIDANCE}")
        need(0.0 <= self.cond_dropout < 1.0, "cond_dropout", "in [0, 1)")
        need(0.0 <= self.warm <= 1.0, "warm", "in [0, 1] (0: no warm start)")

    @property
    def channels(self) -> int:
        """Input channels of the noise model and classifier: own (+ mean-field) observation."""
        return self.obs_dim * (2 if self.use_mf else 1)

    @property
    def cond_dim(self) -> int:
        """Size of the noise model's condition: 1 (the normalised return) with cfg, else 0."""
        return 1 if self.guidance == "cfg" else 0


# The guidance study's changes to the paper's method (docs/guidance-study.md, section 5): the
# return built from the agent's own and its neighbours' mean backlog, classifier-free guidance
# on it (w = 1.2), and plans warm-started from the previous frame's (re-noised to ~0.15 K).
# The `*-steer` presets, `macdmp demo`'s third model and `macdmp reproduce`'s Fig. 4 variant
# all take them from here.
STEER_CHANGES: dict[str, Any] = {
    "reward": "own+neighbours-backlog",
    "guidance": "cfg",
    "warm": 0.15,
}

PRESETS: dict[str, PlannerConfig] = {
    # Paper: K = 100, 100 epochs x 1,000 steps, Diffuser's reference widths.
    "paper": PlannerConfig(),
    # Paper-steer: the paper's models and training with STEER_CHANGES, the guidance study's
    # best variant at paper scale. `paper` stays the default.
    "paper-steer": PlannerConfig(**STEER_CHANGES),
    # Fast: the paper preset with a narrower, shallower U-Net (widths 16, 32, 64 instead of 32 to
    # 256) so that one agent's plan fits a 5 ms frame on one CPU core (docs/realtime.md).
    "fast": PlannerConfig(dim=16, dim_mults=(1, 2, 4), inv_hidden=128),
    # Fast-steer: STEER_CHANGES on the fast architecture: one agent's warm-started CFG plan in
    # one ONNX graph (backend=fused) takes about 1 ms of one CPU core, and 1,000 agents' plans
    # about 3 ms of an H200, at a better delay than the paper preset's cold plans
    # (docs/realtime.md).
    "fast-steer": PlannerConfig(dim=16, dim_mults=(1, 2, 4), inv_hidden=128, **STEER_CHANGES),
    # Demo: small enough to train on a 2-core CPU in a few minutes.
    "demo": PlannerConfig(
        horizon=8,
        dim=16,
        inv_hidden=128,
        n_diffusion_steps=20,
        warmup_steps=100,
        ema_start=200,
        n_epochs=10,
        steps_per_epoch=250,
        log_every=50,
        ckpt_every=250,
    ),
}


def make_config(preset: str = "demo", **overrides: Any) -> PlannerConfig:
    """A preset's configuration with fields replaced by ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"preset: must be one of {tuple(PRESETS)} (got {preset!r})")
    base = PRESETS[preset].to_dict()
    base.update(overrides)
    return PlannerConfig.from_dict(base)


class Normalizer(nn.Module):
    """Per-dimension z-scoring of observations, mean field, actions and returns (dataset stats)."""

    def __init__(self, stats: Mapping[str, Any], obs_dim: int) -> None:
        super().__init__()
        missing = [k for k in STAT_KEYS if k not in stats]
        if missing:
            raise ValueError(f"stats: missing {missing}; a dataset must provide {STAT_KEYS}")
        for k in STAT_KEYS:
            v = torch.as_tensor(np.asarray(stats[k], dtype=np.float32))
            want = (obs_dim,) if k.startswith(("obs", "mf")) else ()
            if tuple(v.shape) != want:
                raise ValueError(f"stats: {k} must have shape {want} (got {tuple(v.shape)})")
            if k.endswith("std"):
                # A constant dimension would divide by zero; treat it as unit scale.
                v = torch.where(v > 1e-6, v, torch.ones_like(v))
            self.register_buffer(k, v)

    def stats(self) -> dict[str, np.ndarray]:
        """The statistics as float32 numpy arrays (what the checkpoint records)."""
        return {k: getattr(self, k).detach().cpu().numpy() for k in STAT_KEYS}

    def obs(self, o: torch.Tensor) -> torch.Tensor:
        return (o - self.obs_mean) / self.obs_std

    def unobs(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.obs_std + self.obs_mean

    def mf(self, o: torch.Tensor) -> torch.Tensor:
        return (o - self.mf_mean) / self.mf_std

    def unmf(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.mf_std + self.mf_mean

    def act(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.act_mean) / self.act_std

    def unact(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.act_std + self.act_mean

    def ret(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.ret_mean) / self.ret_std

    def unret(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.ret_std + self.ret_mean


class InverseDynamics(nn.Module):
    """f_phi: normalised (o_t, o_t+1) -> normalised action, an MLP."""

    def __init__(self, obs_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = 2 * obs_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, o_t: torch.Tensor, o_next: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([o_t, o_next], dim=-1)).squeeze(-1)


def default_target(stats: Mapping[str, Any]) -> float:
    """The default target return (raw units) of return-conditioned sampling: the data's
    ``ret_best`` (the 90% quantile of the horizon returns y), or mean + 1.28 std for a source
    without it (Decision Diffuser conditions on a return near the top of its data)."""
    if "ret_best" in stats:
        return float(np.asarray(stats["ret_best"]))
    mean, std = (float(np.asarray(stats[k])) for k in ("ret_mean", "ret_std"))
    return mean + RET_BEST_FALLBACK_Z * std


def flag(value: str) -> bool:
    """An on/off policy option: 1, true, on, yes or 0, false, off, no."""
    v = value.strip().lower()
    if v in ("1", "true", "on", "yes"):
        return True
    if v in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"not an on/off value: {value!r} (use 1 or 0)")


class PlannerModels(Method):
    """MA-CDMP as a method: eps_theta, J_psi and f_phi with the normaliser, shared by every
    agent (a batch row each); trained jointly by Eq. 19, acting by receding-horizon planning."""

    name = "ma-cdmp"
    version = 1
    config_class = PlannerConfig
    presets = PRESETS
    loss_names = ("loss", "inv", "diff", "cls")
    compile_modules = ("eps", "classifier")
    actor_options = {
        "solver": ("solver", str),
        "steps": ("steps", int),
        "guidance": ("guidance", str),
        "guide": ("guidance_scale", float),
        "target": ("target", float),
        "candidates": ("n_candidates", int),
        "warm": ("warm", float),
        "guide_sigma": ("guide_sigma", float),
        "bf16": ("bf16", flag),
        "compile": ("compile", flag),
        "backend": ("backend", str),
    }
    cfg: PlannerConfig

    def __init__(self, cfg: PlannerConfig, stats: Mapping[str, Any], rbs: float) -> None:
        super().__init__(cfg, stats, rbs)
        self.normalizer = Normalizer(stats, cfg.obs_dim)
        self._schedule: NoiseSchedule | None = None
        unet = dict(
            dim=cfg.dim, dim_mults=cfg.dim_mults, kernel_size=cfg.kernel_size, groups=cfg.groups
        )
        self.eps = TemporalUNet(cfg.horizon, cfg.channels, cond_dim=cfg.cond_dim, **unet)
        # the target return of guidance=cfg when the actor names none (raw units; not a buffer,
        # so the checkpoint's state dict is the same for either guidance)
        self.default_target = default_target(stats)
        self.classifier = HalfUNet(cfg.horizon, cfg.channels, **unet)
        self.invdyn = InverseDynamics(cfg.obs_dim, cfg.inv_hidden, cfg.inv_layers)

    def schedule(self, device: torch.device | str | None = None) -> NoiseSchedule:
        """The noise schedule the models were trained with, on ``device`` (default: theirs)."""
        dev = device if device is not None else self.normalizer.obs_mean.device
        return NoiseSchedule(self.cfg.n_diffusion_steps, self.cfg.beta_schedule, dev)

    def to_model_space(self, x: torch.Tensor, xbar: torch.Tensor | None) -> torch.Tensor:
        """Raw (B, H, obs) own and mean-field sequences -> normalised (B, H, channels)."""
        z = self.normalizer.obs(x)
        if not self.cfg.use_mf:
            return z
        if xbar is None:
            raise ValueError("mean_field: this model uses the mean field (use_mf=True); pass it")
        return torch.cat([z, self.normalizer.mf(xbar)], dim=-1)

    def from_model_space(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised (B, H, channels) -> raw own and (if used) mean-field sequences."""
        d = self.cfg.obs_dim
        own = self.normalizer.unobs(z[..., :d])
        return own, (self.normalizer.unmf(z[..., d:]) if self.cfg.use_mf else None)

    def action_rbs(self, o_t: torch.Tensor, o_next: torch.Tensor) -> torch.Tensor:
        """Raw observations -> demand in RBs, clipped to [0, rbs] (what the simulator takes)."""
        n = self.normalizer
        a = n.unact(self.invdyn(n.obs(o_t), n.obs(o_next)))
        return a.clamp(0.0, self.rbs)

    def predict_return(
        self, x: torch.Tensor, xbar: torch.Tensor | None, k: int = 1
    ) -> torch.Tensor:
        """J_psi in raw return units for raw sequences treated as noise level k (default 1)."""
        z = self.to_model_space(x, xbar)
        idx = torch.full((z.shape[0],), k - 1, dtype=torch.long, device=z.device)
        return self.normalizer.unret(self.classifier(z, idx))

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        return ("x", "xbar", "act", "y") if cfg.use_mf else ("x", "act", "y")  # type: ignore[attr-defined]

    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Eq. 19 on one batch of raw windows: inverse dynamics + noise + return MSE."""
        dev = self.normalizer.obs_mean.device
        if self._schedule is None or self._schedule.device != dev:
            self._schedule = self.schedule(dev)
        return joint_loss(self, self._schedule, batch, generator)

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        from macdmp.planner.policy import PlannerActor

        return PlannerActor(self, seed=seed, **options)


def joint_loss(
    models: PlannerModels,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 19 on one batch of raw windows: inverse dynamics + noise + return MSE (normalised).
    With ``guidance="cfg"`` the noise model is conditioned on the normalised return y, dropped
    for the rows of a keep mask drawn from ``generator`` (no host sync)."""
    cfg = models.cfg
    n = models.normalizer
    x, act, y = batch["x"], batch["act"], batch["y"]
    z0 = models.to_model_space(x, batch.get("xbar"))
    b, h, _ = z0.shape
    dev = z0.device
    idx = torch.randint(0, cfg.n_diffusion_steps, (b,), generator=generator, device=dev)
    noise = torch.randn(z0.shape, generator=generator, device=dev)
    # The first observation is always known when planning, so it is pinned here as well and
    # left out of the noise loss (its "noise" is never removed by the sampler).
    cond = Conditioning.first_step(z0[:, 0], h)
    zk = cond.apply(schedule.q_sample(z0, idx, noise))
    if cfg.guidance == "cfg":
        keep = condition_keep(b, cfg.cond_dropout, generator, dev)
        eps = models.eps(zk, idx, n.ret(y)[:, None], keep)
    else:
        eps = models.eps(zk, idx)
    diff = (eps - noise)[:, 1:].pow(2).mean()
    cls = (models.classifier(zk, idx) - n.ret(y)).pow(2).mean()
    pred = models.invdyn(n.obs(x[:, :-1]), n.obs(x[:, 1:]))
    inv = (pred - n.act(act[:, :-1])).pow(2).mean()
    loss = cfg.w_inv * inv + cfg.w_diff * diff + cfg.w_cls * cls
    return {"loss": loss, "inv": inv, "diff": diff, "cls": cls}
