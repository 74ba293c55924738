"""Joint training of MA-CDMP by Eq. 19 (Algorithm 1), with EMA, gradient clipping, an LR
schedule, JSON-lines loss logs, atomic checkpoints and resumption.

Run folder layout: ``config.json`` (the configuration, for people), ``checkpoint.pt`` (everything
needed to resume or plan) and ``losses.jsonl`` (one line per logged step).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from macdmp.diffusion.sampler import Conditioning
from macdmp.diffusion.schedule import NoiseSchedule
from macdmp.planner.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    check_compatible,
    pick_device,
    read_checkpoint,
    save_atomic,
)
from macdmp.planner.models import PlannerConfig, PlannerModels

LOSS_NAMES = ("loss", "inv", "diff", "cls")


class WindowSource(Protocol):
    """What training needs from a dataset (``macdmp.data.windows.WindowDataset``)."""

    horizon: int
    gamma: float
    obs_dim: int
    rbs: Any
    stats: dict[str, np.ndarray]
    fingerprint: str

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]: ...


def joint_loss(
    models: PlannerModels,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 19 on one batch of raw windows: inverse dynamics + noise + return MSE (normalised)."""
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
    diff = (models.eps(zk, idx) - noise)[:, 1:].pow(2).mean()
    cls = (models.classifier(zk, idx) - n.ret(y)).pow(2).mean()
    pred = models.invdyn(n.obs(x[:, :-1]), n.obs(x[:, 1:]))
    inv = (pred - n.act(act[:, :-1])).pow(2).mean()
    loss = cfg.w_inv * inv + cfg.w_diff * diff + cfg.w_cls * cls
    return {"loss": loss, "inv": inv, "diff": diff, "cls": cls}


def lr_factor(cfg: PlannerConfig, step: int) -> float:
    """Multiplier of cfg.lr at ``step``: linear warm-up, then cosine decay or constant."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    p = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def _check_dataset(cfg: PlannerConfig, data: WindowSource) -> None:
    if int(data.horizon) != cfg.horizon:
        raise ValueError(f"horizon: dataset windows have H={data.horizon}, config {cfg.horizon}")
    if abs(float(data.gamma) - cfg.gamma) > 1e-9:
        raise ValueError(f"gamma: dataset returns use {data.gamma}, config {cfg.gamma}")
    if int(data.obs_dim) != cfg.obs_dim:
        raise ValueError(f"obs_dim: dataset has {data.obs_dim}, config {cfg.obs_dim}")


class Trainer:
    """Holds the models, EMA copy, optimiser and RNGs of one run folder; see :func:`train`."""

    def __init__(
        self, cfg: PlannerConfig, data: WindowSource, run_dir: str | Path, device: Any = None
    ) -> None:
        _check_dataset(cfg, data)
        self.cfg = cfg
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = pick_device(device)
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        self.log_path = self.run_dir / "losses.jsonl"
        torch.manual_seed(cfg.seed)  # parameter initialisation
        self.models = PlannerModels(cfg, data.stats, float(data.rbs)).to(self.device)
        self.ema = copy.deepcopy(self.models).requires_grad_(False).eval()
        self.schedule = self.models.schedule(self.device)
        self.opt = torch.optim.Adam(self.models.parameters(), lr=cfg.lr, foreach=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.acc = {k: 0.0 for k in LOSS_NAMES}
        self.acc_n = 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.ckpt_path.exists():
            self._resume()
        else:
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            self.log_path.write_text("")

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.cfg.to_dict(),
            "fingerprint": str(self.data.fingerprint),
            "rbs": float(self.data.rbs),
            "stats": self.models.normalizer.stats(),
            "step": self.step,
            "model": self.models.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "lr_scheduler": self.sched.state_dict(),
            "torch_rng": self.gen.get_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "log_acc": {"sums": dict(self.acc), "n": self.acc_n},
        }

    def save(self) -> None:
        save_atomic(self.state(), self.ckpt_path)

    def _resume(self) -> None:
        ckpt = read_checkpoint(self.ckpt_path, self.device)
        check_compatible(ckpt, self.cfg, str(self.data.fingerprint), self.ckpt_path)
        self.models.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["lr_scheduler"])
        self.gen.set_state(ckpt["torch_rng"].cpu())
        self.rng.bit_generator.state = ckpt["numpy_rng"]
        self.step = int(ckpt["step"])
        self.acc = dict(ckpt["log_acc"]["sums"])
        self.acc_n = int(ckpt["log_acc"]["n"])
        # Drop log lines written after the checkpoint so the resumed curve continues cleanly.
        if self.log_path.exists():
            keep = [
                ln
                for ln in self.log_path.read_text().splitlines()
                if ln.strip() and json.loads(ln)["step"] <= self.step
            ]
            self.log_path.write_text("".join(ln + "\n" for ln in keep))

    # -- training ----------------------------------------------------------------------------
    def _batch(self) -> dict[str, torch.Tensor]:
        raw = self.data.sample(self.cfg.batch_size, self.rng)
        keys = ("x", "xbar", "act", "y") if self.cfg.use_mf else ("x", "act", "y")
        return {
            k: torch.from_numpy(np.asarray(raw[k], dtype=np.float32)).to(self.device) for k in keys
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.step < self.cfg.ema_start:
            for e, p in zip(self.ema.parameters(), self.models.parameters(), strict=True):
                e.copy_(p)
            return
        torch._foreach_lerp_(
            list(self.ema.parameters()), list(self.models.parameters()), 1 - self.cfg.ema_decay
        )

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the loss terms as floats."""
        losses = joint_loss(self.models, self.schedule, self._batch(), self.gen)
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        nn.utils.clip_grad_norm_(self.models.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        self._update_ema()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _log(self, losses: dict[str, float], t0: float) -> dict[str, Any] | None:
        for k in LOSS_NAMES:
            self.acc[k] += losses[k]
        self.acc_n += 1
        if self.step % self.cfg.log_every and self.step != self.cfg.total_steps:
            return None
        rec: dict[str, Any] = {"step": self.step, "epoch": self.step / self.cfg.steps_per_epoch}
        rec.update({k: self.acc[k] / self.acc_n for k in LOSS_NAMES})
        rec["lr"] = self.opt.param_groups[0]["lr"]
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        with self.log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self.acc = {k: 0.0 for k in LOSS_NAMES}
        self.acc_n = 0
        return rec

    def run(self, progress: bool = True, stop_after: int | None = None) -> Path:
        """Train to cfg.total_steps (or ``stop_after`` more steps); checkpoint on the way and at
        the end, and on Ctrl-C before re-raising. Returns the checkpoint path."""
        from tqdm.auto import tqdm

        total = self.cfg.total_steps
        end = total if stop_after is None else min(total, self.step + stop_after)
        t0 = time.perf_counter()
        self.models.train()
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc="train",
        )
        try:
            while self.step < end:
                rec = self._log(self.train_step(), t0)
                bar.update(1)
                if rec is not None:
                    bar.set_postfix(
                        loss=f"{rec['loss']:.4f}",
                        diff=f"{rec['diff']:.4f}",
                        cls=f"{rec['cls']:.4f}",
                        inv=f"{rec['inv']:.4f}",
                    )
                if self.step % self.cfg.ckpt_every == 0:
                    self.save()
        except KeyboardInterrupt:
            self.save()
            bar.close()
            raise
        bar.close()
        self.save()
        return self.ckpt_path


def train(
    cfg: PlannerConfig,
    data: WindowSource,
    run_dir: str | Path,
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume) a run folder to completion; returns the checkpoint path."""
    return Trainer(cfg, data, run_dir, device).run(progress=progress, stop_after=stop_after)


def read_losses(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged loss records of a run folder, in order."""
    path = Path(run_dir) / "losses.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
