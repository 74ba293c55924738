"""MA-CDMP's three models (noise model, return classifier, inverse dynamics), the normaliser and
the configuration they are built from. Raw units go in and out; normalisation happens inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from macdmp.diffusion.backbones import HalfUNet, TemporalUNet, check_unet_shape, condition_keep
from macdmp.diffusion.sampler import Conditioning
from macdmp.diffusion.schedule import SCHEDULES, NoiseSchedule
from macdmp.methods.base import DEMO_DIFFUSION, OMIT_AT_DEFAULT, Actor, Method, TrainConfig
from macdmp.methods.base import make_config as base_make_config
from macdmp.methods.branches import Branches
from macdmp.methods.learners import InverseDynamics, Normalizer, default_target
from macdmp.planner.plan import GUIDANCE
from macdmp.planner.policy import PlannerActor

# what of the mean field the inverse dynamics reads besides (o_t, o_t+1) (PlannerConfig.inv_mf)
INV_MF = ("none", "now", "both")


@dataclass(frozen=True)
class PlannerConfig(TrainConfig):
    """MA-CDMP's configuration: the common training fields plus its models; validated when
    built."""

    # fields added after results were recorded, left out of a run's params at their default
    omit_at_default: ClassVar[dict[str, Any]] = {
        **OMIT_AT_DEFAULT,
        "inv_mf": "none",
        "filtered": False,
        "history": 0,
        "inv_past": False,
    }

    obs_dim: int = 4
    use_mf: bool = True
    # backbones (Diffuser's reference settings)
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 5
    groups: int = 8
    inv_hidden: int = 256
    inv_layers: int = 2
    # what of the mean field the inverse dynamics reads besides (o_t, o_t+1) (docs/adaptive-
    # study.md, section 5): "none" (the paper's f_phi), "now" (the measured m_t), "both" (m_t
    # and the plan's m_t+1)
    inv_mf: str = "none"
    # the data lever (docs/adaptive-study.md, section 4): the noise model, the plans' prior,
    # learns from the windows of the best 10% of the data's (trajectory, agent) returns only,
    # those at or above `rtg_start_best` (%BC's filter); the return model and the inverse
    # dynamics still learn from every window
    filtered: bool = False
    # what an agent knows of its own past (docs/adaptive-study.md, lever 5): a plan pins its
    # window's first history + 1 frames, o_t-k .. o_t (own and mean-field channels, k =
    # history), and samples the rest; the noise loss leaves them out, the inverse dynamics acts
    # on (o_t, o_t+1) at window positions k and k + 1, and the actor keeps each agent's last k
    # observations and mean fields (an episode's first frames repeat its first observation).
    # 0 (the paper's): the plan is pinned at o_t alone. The plan's future is horizon - k - 1
    # frames; the return the classifier and the guidance use stays the window's.
    history: int = 0
    # with history = k >= 1, f_phi reads the pinned past o_t-k .. o_t-1 besides (o_t, o_t+1)
    # (and what inv_mf names), so the past can reach the action other than through the planned
    # o_t+1; trained on the window's transitions from position k on (docs/adaptive-study.md,
    # lever 5). False (the paper's f_phi): (o_t, o_t+1) alone.
    inv_past: bool = False
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
        need(
            not isinstance(self.history, bool) and isinstance(self.history, int)
            and 0 <= self.history <= self.horizon - 2,
            "history", f"an integer in [0, horizon - 2 = {self.horizon - 2}]",
        )  # fmt: skip
        need(
            isinstance(self.inv_past, bool) and (not self.inv_past or self.history >= 1),
            "inv_past", "a bool, and true only with history >= 1 (the past f_phi would read)",
        )  # fmt: skip
        need(self.inv_hidden >= 1, "inv_hidden", ">= 1")
        need(self.inv_layers >= 1, "inv_layers", ">= 1")
        need(self.inv_mf in INV_MF, "inv_mf", f"one of {INV_MF}")
        need(self.use_mf or self.inv_mf == "none", "inv_mf", "'none' when use_mf is False")
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


# The adaptive study's changes on top of STEER_CHANGES (the `top-steer` preset)
TOP_CHANGES: dict[str, Any] = {"filtered": True, "inv_mf": "now"}


def make_config(preset: str = "demo", **overrides: Any) -> PlannerConfig:
    """MA-CDMP's preset configuration (``PlannerModels.presets``) with fields replaced by
    ``overrides`` (``macdmp.methods.make_config`` for ``ma-cdmp``)."""
    return base_make_config("ma-cdmp", preset, **overrides)  # type: ignore[return-value]


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
    presets = {
        # Paper: K = 100, 100 epochs x 1,000 steps, Diffuser's reference widths.
        "paper": PlannerConfig(),
        # Paper-steer: the paper's models and training with STEER_CHANGES, the guidance study's
        # best variant at paper scale. `paper` stays the default.
        "paper-steer": PlannerConfig(**STEER_CHANGES),
        # Fast: the paper preset with a narrower, shallower U-Net (widths 16, 32, 64 instead of
        # 32 to 256) so that one agent's plan fits a 5 ms frame on one CPU core
        # (docs/guide/realtime.md).
        "fast": PlannerConfig(dim=16, dim_mults=(1, 2, 4), inv_hidden=128),
        # Fast-steer: STEER_CHANGES on the fast architecture: one agent's warm-started CFG plan in
        # one graph takes about 1 ms of one CPU core in ONNX Runtime (backend=fused), 0.6 ms in
        # OpenVINO (backend=openvino, warm=0.1), and 1,000 agents' plans about 3 ms of an H200,
        # at a better delay than the paper preset's cold plans (docs/guide/realtime.md).
        "fast-steer": PlannerConfig(dim=16, dim_mults=(1, 2, 4), inv_hidden=128, **STEER_CHANGES),
        # Top-steer: paper-steer with TOP_CHANGES, the adaptive study's best settings at paper
        # scale so far: the plans' prior learns from the best 10% of the data's returns only,
        # and f_phi reads the measured mean field (docs/adaptive-study.md, sections 4 and 5c).
        "top-steer": PlannerConfig(**STEER_CHANGES, **TOP_CHANGES),
        # Demo: small enough to train on a 2-core CPU in a few minutes.
        "demo": PlannerConfig(
            horizon=8,
            dim=16,
            inv_hidden=128,
            n_diffusion_steps=20,
            n_epochs=10,
            **DEMO_DIFFUSION,
        ),
    }
    loss_names = ("loss", "inv", "diff", "cls")
    no_mf_changes = {"use_mf": False, "inv_mf": "none"}  # no mean field for f_phi to read either
    compile_modules = ("eps", "classifier")
    joint_modules = ("eps", "classifier", "invdyn")
    actor_options = {
        "solver": ("solver", str),
        "steps": ("steps", int),
        "guidance": ("guidance", str),
        "guide": ("guide", float),
        "cfg": ("cfg", float),
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
        # f_phi reads (o_t, o_t+1), with inv_mf "now" also m_t, with "both" also m_t+1, with
        # inv_past also o_t-k .. o_t-1
        extra = cfg.obs_dim * INV_MF.index(cfg.inv_mf)  # "none" 0, "now" m_t, "both" m_t, m_t+1
        extra += cfg.obs_dim * cfg.history if cfg.inv_past else 0
        self.invdyn = InverseDynamics(cfg.obs_dim, cfg.inv_hidden, cfg.inv_layers, extra)
        # the filter's threshold (a number, not a buffer: run folders keep their layout)
        self.rtg_best = float(np.asarray(stats["rtg_start_best"])) if cfg.filtered else -np.inf

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

    def action_rbs(
        self,
        o_t: torch.Tensor,
        o_next: torch.Tensor,
        mf_t: torch.Tensor | None = None,
        mf_next: torch.Tensor | None = None,
        past: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw observations (and the raw mean fields that ``inv_mf`` names, and with
        ``inv_past`` the raw past ``past``, (A, history, obs), oldest first) -> demand in RBs,
        clipped to [0, rbs] (what the simulator takes)."""
        n, which = self.normalizer, self.cfg.inv_mf
        if which != "none" and (mf_t is None or (mf_next is None and which == "both")):
            raise ValueError("mean_field: this model's inverse dynamics reads it (inv_mf)")
        want = (*o_t.shape[:-1], self.cfg.history, self.cfg.obs_dim)
        if self.cfg.inv_past and (past is None or tuple(past.shape) != want):
            got = None if past is None else tuple(past.shape)
            raise ValueError(f"past: expected shape {want} (inv_past), got {got}")
        now, nxt = self.inv_inputs(
            n.obs(o_t),
            n.obs(o_next),
            n.mf(mf_t) if which != "none" else None,  # type: ignore[arg-type]
            n.mf(mf_next) if which == "both" else None,  # type: ignore[arg-type]
            n.obs(past) if self.cfg.inv_past else None,  # type: ignore[arg-type]
        )
        return n.unact(self.invdyn(now, nxt)).clamp(0.0, self.rbs)

    def inv_inputs(
        self,
        o_t: torch.Tensor,
        o_next: torch.Tensor,
        mf_t: torch.Tensor | None,
        mf_next: torch.Tensor | None,
        past: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f_phi's two inputs from normalised frames: (o_t, o_t+1), with ``inv_mf`` "now"
        ((o_t, m_t), o_t+1), with "both" ((o_t, m_t), (o_t+1, m_t+1)); with ``inv_past`` the
        first input starts with the past (..., history, obs), flattened oldest first."""
        which = self.cfg.inv_mf
        if self.cfg.inv_past:
            o_t = torch.cat([past.flatten(-2), o_t], dim=-1)  # type: ignore[union-attr]
        if which == "none":
            return o_t, o_next
        now = torch.cat([o_t, mf_t], dim=-1)  # type: ignore[list-item]
        if which == "now":
            return now, o_next
        return now, torch.cat([o_next, mf_next], dim=-1)  # type: ignore[list-item]

    def plan_action(
        self, o_t: torch.Tensor, mf_t: torch.Tensor | None, z: torch.Tensor
    ) -> torch.Tensor:
        """The demand (RBs) of plans ``z`` (model space, (A, H, channels)) made from the raw
        observation ``o_t`` and mean field ``mf_t``: the inverse dynamics on o_t (the plan's
        pinned entry at position ``history``, exactly) and the plan's next frame (with
        ``inv_past`` also the plan's pinned past)."""
        own, mf = self.from_model_space(z)
        k = self.cfg.history
        past = own[:, :k] if self.cfg.inv_past else None  # the plan's pinned past
        return self.action_rbs(o_t, own[:, k + 1], mf_t, None if mf is None else mf[:, k + 1], past)

    def predict_return(
        self, x: torch.Tensor, xbar: torch.Tensor | None, k: int = 1
    ) -> torch.Tensor:
        """J_psi in raw return units for raw sequences treated as noise level k (default 1)."""
        z = self.to_model_space(x, xbar)
        idx = torch.full((z.shape[0],), k - 1, dtype=torch.long, device=z.device)
        return self.normalizer.unret(self.classifier(z, idx))

    @classmethod
    def batch_keys(cls, cfg: TrainConfig) -> tuple[str, ...]:
        keys = ("x", "xbar", "act", "y") if cfg.use_mf else ("x", "act", "y")  # type: ignore[attr-defined]
        return (*keys, "rtg0") if getattr(cfg, "filtered", False) else keys

    def loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Eq. 19 on one batch of raw windows: inverse dynamics + noise + return MSE."""
        dev = self.normalizer.obs_mean.device
        if self._schedule is None or self._schedule.device != dev:
            self._schedule = self.schedule(dev)
        return joint_loss(self, self._schedule, batch, generator)

    def make_actor(self, seed: int = 0, **options: Any) -> Actor:
        return PlannerActor(self, seed=seed, **options)


def joint_loss(
    models: PlannerModels,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 19 on one batch of raw windows: inverse dynamics + noise + return MSE (normalised).
    With ``guidance="cfg"`` the noise model is conditioned on the normalised return y, dropped
    for the rows of a keep mask drawn from ``generator`` (no host sync). With ``filtered`` the
    noise loss is the mean over the windows whose trajectory's return reaches ``rtg_best``."""
    cfg = models.cfg
    n = models.normalizer
    x, act, y = batch["x"], batch["act"], batch["y"]
    z0 = models.to_model_space(x, batch.get("xbar"))
    b, h, _ = z0.shape
    dev = z0.device
    idx = torch.randint(0, cfg.n_diffusion_steps, (b,), generator=generator, device=dev)
    noise = torch.randn(z0.shape, generator=generator, device=dev)
    # The current observation (and, with ``history``, the ones before it) is always known when
    # planning, so it is pinned here as well and left out of the noise loss (its "noise" is
    # never removed by the sampler).
    known = cfg.history + 1
    cond = Conditioning.prefix(z0[:, :known], h)
    zk = cond.apply(schedule.q_sample(z0, idx, noise))
    yn = n.ret(y)
    keep = condition_keep(b, cfg.cond_dropout, generator, dev) if cfg.guidance == "cfg" else None
    # The three models share no parameter: with ``streams`` each runs (forward and backward)
    # on a CUDA stream of its own (macdmp.methods.branches); the same kernels either way.
    par = Branches(dev, cfg.streams)

    def noise_loss() -> torch.Tensor:
        eps = models.eps(zk, idx, yn[:, None], keep) if keep is not None else models.eps(zk, idx)
        if cfg.filtered:  # a weighted mean, no host sync; 0 when no window of the batch passes
            per_window = (eps - noise)[:, known:].pow(2).mean(dim=(1, 2))
            best = (batch["rtg0"] >= models.rtg_best).to(per_window.dtype)
            return (per_window * best).sum() / best.sum().clamp(min=1.0)
        return (eps - noise)[:, known:].pow(2).mean()

    def inverse_loss() -> torch.Tensor:
        # f_phi on the data's transitions, reading what inv_mf names (normalised as the
        # planner's); with inv_past the transitions from position k = history on, each with
        # the k frames before it
        own = n.obs(x)
        mf = z0[..., cfg.obs_dim :] if cfg.inv_mf != "none" else own  # not read with "none"
        k = cfg.history if cfg.inv_past else 0
        past = None
        if k:  # (B, H - k - 1, k, obs): window t - k .. t - 1 for t = k .. H - 2
            past = own[:, :-2].unfold(1, k, 1).transpose(-1, -2)
        ins = models.inv_inputs(own[:, k:-1], own[:, k + 1 :], mf[:, k:-1], mf[:, k + 1 :], past)
        return (models.invdyn(*ins) - n.act(act[:, k:-1])).pow(2).mean()

    diff = par.run(noise_loss, zk, idx, yn, keep, noise, batch)
    cls = par.run(lambda: (models.classifier(zk, idx) - yn).pow(2).mean(), zk, idx, yn)
    inv = par.run(inverse_loss, x, z0, act)
    par.join()
    loss = cfg.w_inv * inv + cfg.w_diff * diff + cfg.w_cls * cls
    return {"loss": loss, "inv": inv, "diff": diff, "cls": cls}
