"""The one trainer of every method: optimiser, EMA, learning-rate schedule, logs, in-loop
evaluation, checkpoints and resumption; on a GPU, the whole step replayed as one CUDA graph,
and several runs packed on one GPU.

Run folder layout: ``config.json`` (method, configuration), ``checkpoint.pt`` (the one format
of :mod:`macdmp.methods.checkpoint`), ``losses.jsonl`` (one line per logged step) and, with
``eval_every``, ``evals.jsonl`` (the EMA policy's QoS on held-out networks: learning curves).
A trainer holds the folder's lock (``.lock``, :mod:`macdmp.common.locking`) from before it writes
anything: a second process on the same folder is refused, naming the holder.

One step: draw a batch of windows on the device, the method's loss, backward, gradient clipping,
Adam, the EMA update and the method's ``after_step``. No step reads anything back to the host:
the losses are summed on the device and read every ``log_every`` steps. On a CUDA device the
step is captured once as a CUDA graph (after a few eager warm-up steps, which are ordinary
training steps) and replayed; its random numbers come from the run's own generator, registered
with the graph, so a replayed step draws what the eager step would have drawn.

Interruption: Ctrl-C and SIGTERM stop the loop between two steps; the state of the last whole
step is saved, and the same command resumes it. A resumed run's log is the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macdmp.common.locking import RUN_LOCK_NAME, lock_output
from macdmp.common.outputs import read_jsonl
from macdmp.common.progress import progress_bar
from macdmp.common.signals import StopFlag, stop_requests
from macdmp.data.rewards import DEFAULT_REWARD
from macdmp.data.windows import open_windows
from macdmp.methods.base import Method, TrainConfig, get_method, lr_factor, lr_factor_tensor
from macdmp.methods.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FORMAT,
    CheckpointMismatchError,
    check_compatible,
    pick_device,
    read_checkpoint,
    write_checkpoint,
)
from macdmp.methods.flat import FlatUpdate
from macdmp.methods.loggers import check_logger, make_logger
from macdmp.methods.policy import ActorPolicy
from macdmp.policies.episodes import LOSS_AWARE, run_groups
from macdmp.sim.seeds import validation_seeds

WARMUP_STEPS_BEFORE_CAPTURE = 3
# The in-loop evaluation's choice of a run's best checkpoint: the lowest loss-aware delay on the
# validation seeds (macdmp.sim.seeds), the same rule for every method
SELECT_METRIC = LOSS_AWARE


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by Trainer.run after Ctrl-C or SIGTERM, once the checkpoint is saved."""


def _data_path(data: Any) -> str:
    """The dataset file the windows were read from, absolute ('' for in-memory data)."""
    path = getattr(data, "path", None)
    return str(Path(path).resolve()) if path else ""


def _check_dataset(cfg: TrainConfig, data: Any) -> None:
    if int(data.horizon) != cfg.horizon:
        raise ValueError(f"horizon: dataset windows have H={data.horizon}, config {cfg.horizon}")
    if abs(float(data.gamma) - cfg.gamma) > 1e-9:
        raise ValueError(f"gamma: dataset returns use {data.gamma}, config {cfg.gamma}")
    reward = getattr(data, "reward", DEFAULT_REWARD)
    if reward != cfg.reward:
        raise ValueError(f"reward: dataset windows use {reward!r}, config {cfg.reward!r}")


def wait_for_device(stream: torch.cuda.Stream | None, device: torch.device) -> None:
    """Wait for the work queued on ``stream`` (a run's own CUDA stream), or on ``device``."""
    if stream is not None:
        stream.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)


def ema_weight(cfg: TrainConfig, step_t: torch.Tensor, step: int) -> torch.Tensor | float:
    """The EMA's weight after a step (``step_t``: the steps taken, on the device; ``step``: the
    same before this step, on the host): 1 (a copy of the weights) until ema_start, then
    1 - ema_decay. On CUDA a 0-d device tensor (no host synchronisation, capturable); on the
    CPU, where the step is known on the host, a float."""
    if step_t.device.type == "cuda":
        return torch.where(step_t < cfg.ema_start, 1.0, 1.0 - cfg.ema_decay).to(torch.float32)
    return 1.0 if step + 1 < cfg.ema_start else 1.0 - cfg.ema_decay


def ema_update(
    ema: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    cfg: TrainConfig,
    step_t: torch.Tensor,
    step: int,
) -> None:
    """The EMA after a step over lists of tensors (:func:`ema_weight`). On CUDA as sub, mul,
    add (a 0-d weight tensor given to _foreach_lerp_ is read back as a Python number); on the
    CPU one fused op."""
    w = ema_weight(cfg, step_t, step)
    with torch.no_grad():
        if isinstance(w, torch.Tensor):
            delta = torch._foreach_sub(params, ema)
            torch._foreach_mul_(delta, w)
            torch._foreach_add_(ema, delta)
        else:
            torch._foreach_lerp_(ema, params, w)


class Trainer:
    """One run folder: the method, its EMA copy, optimiser, generator and step counter."""

    def __init__(
        self,
        method: str | type[Method],
        cfg: TrainConfig,
        data: Any,
        run_dir: str | Path,
        device: str | torch.device | None = None,
        capture: bool | None = None,
        compile: bool = False,
        logger: str = "none",
    ) -> None:
        cls = get_method(method) if isinstance(method, str) else method
        check_logger(logger)  # an unknown or uninstalled logger is refused before any work
        if not isinstance(cfg, cls.config_class):
            raise TypeError(f"cfg: {cls.name} needs a {cls.config_class.__name__}")
        _check_dataset(cfg, data)
        self.cfg = cfg
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = pick_device(device)
        cuda = self.device.type == "cuda"
        self.capture = cuda if capture is None else bool(capture)
        if self.capture and not cuda:
            raise ValueError("capture: CUDA-graph capture needs a CUDA device (use capture=off)")
        self.compile = bool(compile)
        # The step's arithmetic (cfg.tf32, cfg.bf16): on CUDA only; the CPU step stays float32.
        self.tf32 = cuda and cfg.tf32
        self.bf16 = cuda and cfg.bf16
        self.ckpt_path = self.run_dir / CHECKPOINT_NAME
        self.best_path = self.run_dir / BEST_NAME
        # the best in-loop evaluation so far (SELECT_METRIC, step), and its EMA weights until
        # the next save writes them to best.pt
        self.best: dict[str, float] = {"value": float("inf"), "step": -1}
        self._best_weights: dict[str, torch.Tensor] | None = None
        self.log_path = self.run_dir / "losses.jsonl"
        self.eval_path = self.run_dir / "evals.jsonl"
        torch.manual_seed(cfg.seed)  # parameter initialisation
        self.method = cls(cfg, data.stats, float(data.rbs)).to(self.device)
        self.ema = copy.deepcopy(self.method).requires_grad_(False).eval()
        named = dict(self.method.named_parameters())
        ema_named = dict(self.ema.named_parameters())
        self.params = [p for p in named.values() if p.requires_grad]
        self.ema_params = [ema_named[k] for k, p in named.items() if p.requires_grad]
        # On CUDA the learning rate is a device tensor set inside the step (capturable Adam);
        # on the CPU a float set before each step.
        self.lr_t = torch.tensor(cfg.lr, dtype=torch.float32, device=self.device)
        # CUDA: the fused Adam kernel, capturable with a device learning rate; CPU: foreach.
        kw = {"fused": True, "capturable": True} if cuda else {"foreach": True}
        self.opt = torch.optim.Adam(self.params, lr=self.lr_t if cuda else cfg.lr, **kw)
        self._flat: FlatUpdate | None = None
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.sampler = data.torch_sampler(self.device, cls.batch_keys(cfg))
        self.loss_names = cls.loss_names
        self.step = 0
        self.wall_s = 0.0
        self.step_t = torch.zeros((), dtype=torch.long, device=self.device)
        self.acc = torch.zeros(len(self.loss_names) + 1, dtype=torch.float64, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream: torch.cuda.Stream | None = None
        self.compile_s = 0.0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # One writer per run folder: a second process is refused here, naming the holder; the
        # lock goes with this trainer (close(), or when it is collected) or its process.
        lock = lock_output(self.run_dir / RUN_LOCK_NAME, f"run folder {self.run_dir}")
        self._unlock = weakref.finalize(self, lock.release)
        try:
            if self.ckpt_path.exists():
                self._resume()
            else:
                meta = {"method": cls.name, "method_version": cls.version, "config": cfg.to_dict()}
                (self.run_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
                self.log_path.write_text("")
                if self.eval_path.exists():
                    self.eval_path.unlink()
            self.lay_out_flat()
            # losses, learning rate and evaluations where people look too (the JSONL files stay
            # the record); a resumed run's points replace those logged after its checkpoint
            self.logger = make_logger(
                logger, self.run_dir, self.run_dir.name, cfg.to_dict(), start_step=self.step
            )
        except BaseException:
            self.close()
            raise
        self._close_logger = weakref.finalize(self, self.logger.close)

    def lay_out_flat(self) -> None:
        """With ``flat`` (the default): the parameters, their EMA and the Adam state as views
        into flat buffers, so the update after the backward is a few kernels over long tensors
        (:mod:`macdmp.methods.flat`); again after anything replaced those tensors. Parameters
        that cannot share one buffer (of several dtypes, say: a plugin's) keep the per-tensor
        update."""
        self._flat = None
        if self.cfg.flat:
            with contextlib.suppress(ValueError):  # refused before any tensor was re-pointed
                self._flat = FlatUpdate(self.params, self.ema_params, self.opt)

    def close(self) -> None:
        """Close the logger and release the run folder's lock (both also happen when the
        trainer is collected, or its process ends)."""
        if hasattr(self, "_close_logger"):
            self._close_logger()
        self._unlock()

    @property
    def done(self) -> bool:
        return self.step >= self.cfg.total_steps

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method.name,
            "method_version": self.method.version,
            "config": self.cfg.to_dict(),
            "fingerprint": str(self.data.fingerprint),
            "data_path": _data_path(self.data),
            "rbs": float(self.data.rbs),
            "stats": {k: np.asarray(v) for k, v in self.data.stats.items()},
            "step": self.step,
            "wall_s": self.wall_s,
            "model": self.method.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": self.gen.get_state(),
            "rng_device": self.device.type,
            "log_acc": self.acc.cpu(),
            "best": dict(self.best),
        }

    def save(self) -> None:
        self.write_state(self.state())

    def write_state(self, state: dict[str, Any]) -> None:
        """``state`` as the checkpoint; first, when an evaluation since the last save was the
        best so far, ``best.pt``: the same format, with the EMA weights of that evaluation's
        step (the stacked trainer writes its runs' states through this too)."""
        if self._best_weights is not None:
            weights = self._best_weights
            meta = {"metric": SELECT_METRIC, "seeds": "validation", **self.best}
            best = {**state, "model": weights, "ema": weights, "step": int(self.best["step"])}
            write_checkpoint({**best, "selected": meta}, self.best_path)
            self._best_weights = None
        write_checkpoint(state, self.ckpt_path)

    def _resume(self) -> None:
        ckpt = read_checkpoint(self.ckpt_path, "cpu")
        check_compatible(
            ckpt,
            self.method.name,
            self.cfg,
            str(self.data.fingerprint),
            self.ckpt_path,
            getattr(self.data, "path", None),
        )
        self.method.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        opt_state = ckpt["optimizer"]
        for group in opt_state["param_groups"]:  # this device's settings, not the saver's
            group.update(
                {k: v for k, v in self.opt.param_groups[0].items() if k not in ("params",)}
            )
        self.opt.load_state_dict(opt_state)
        if self.device.type == "cuda":  # the step writes the learning rate into this tensor
            for group in self.opt.param_groups:
                group["lr"] = self.lr_t
        rng = ckpt["rng"] if "rng" in ckpt else ckpt["torch_rng"]  # older: "torch_rng"
        saved_kind = ckpt.get("rng_device", self.device.type)
        if saved_kind == self.device.type:
            self.gen.set_state(rng.cpu())
        else:
            # CPU and CUDA generators differ: a run moved to another kind of device goes on
            # with a fresh stream, seeded from its seed and step (so this too is reproducible).
            self.gen.manual_seed(self.cfg.seed * 1_000_003 + int(ckpt["step"]))
        self.step = int(ckpt["step"])
        self.wall_s = float(ckpt.get("wall_s", 0.0))
        if "best" in ckpt:  # older checkpoints have no best.pt
            self.best = {"value": float(ckpt["best"]["value"]), "step": int(ckpt["best"]["step"])}
        self.step_t.fill_(self.step)
        acc = ckpt.get("log_acc")
        if isinstance(acc, torch.Tensor):
            self.acc.copy_(acc)
        elif isinstance(acc, dict):  # the older format: {"sums": {...}, "n": int}
            sums = [acc["sums"].get(k, 0.0) for k in self.loss_names]
            self.acc.copy_(torch.tensor([*sums, acc["n"]], dtype=torch.float64))
        # Drop log lines written after the checkpoint so the resumed curve continues cleanly.
        for path in (self.log_path, self.eval_path):
            if path.exists():
                read_jsonl(path)  # a damaged line is refused naming the file and the line
                keep = [
                    ln
                    for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= self.step
                ]
                path.write_text("".join(ln + "\n" for ln in keep))

    # -- one step ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _arithmetic(self) -> Iterator[None]:
        """TF32 matmuls (cfg.tf32) for the step only: the setting is process-wide, so it is
        restored after each eager step and after the capture (a captured graph keeps the
        kernels chosen when it was captured); evaluation and other runs keep their own."""
        if not self.tf32:
            yield
            return
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)

    def _body(self, capturing: bool) -> None:
        """The whole step, with no host synchronisation (capturable)."""
        cfg = self.cfg
        batch = self.sampler.sample(cfg.batch_size, self.gen)
        # bf16: the loss's forward under autocast (matmuls and convolutions in bf16, reductions
        # and losses in float32); backward outside it, as autocast wants. No weight cache: it
        # would be filled during capture and is not meant for CUDA graphs.
        amp = (
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
            if self.bf16
            else contextlib.nullcontext()
        )
        with amp:
            losses = self.method.loss(batch, self.gen)
        if not capturing:
            self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if self.device.type == "cuda":
            self.lr_t.copy_(cfg.lr * lr_factor_tensor(cfg, self.step_t))
        flat = self._flat
        if flat is not None and not flat.ready():
            # a parameter without a gradient: Adam leaves it as it is, which only the
            # per-tensor update does; that update runs from here on (the state is shared)
            flat = self._flat = None
        if flat is not None:
            flat.adam(cfg.grad_clip)
            self.step_t += 1
            flat.average(ema_weight(cfg, self.step_t, self.step))
        else:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
            self.opt.step()
            self.step_t += 1
            ema_update(self.ema_params, self.params, cfg, self.step_t, self.step)
        self.method.after_step()
        vals = [losses[k].detach().to(torch.float64) for k in self.loss_names]
        self.acc += torch.stack([*vals, torch.ones((), dtype=torch.float64, device=self.device)])

    def _eager_step(self) -> None:
        if self.device.type != "cuda":
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step)
        with self._arithmetic():
            self._body(capturing=False)
        self.step += 1

    def prepare(self, end: int | None = None) -> None:
        """Compile the backbones and capture the step (CUDA), before the first step; the eager
        warm-up steps before capture never go past step ``end`` (default: total_steps)."""
        if self.compile and not getattr(self, "_compiled", False):
            for name in self.method.compile_modules:
                getattr(self.method, name).compile()
            self._compiled = True
        if not self.capture or self.graph is not None:
            return
        dev = self.device
        self.stream = self.stream or torch.cuda.Stream(dev)
        self.stream.wait_stream(torch.cuda.current_stream(dev))
        t0 = time.perf_counter()
        with torch.cuda.stream(self.stream):
            # Warm-up: ordinary training steps, eager (compilation, cuDNN choices, Adam state).
            end = self.cfg.total_steps if end is None else end
            n = min(WARMUP_STEPS_BEFORE_CAPTURE, end - self.step - 1)
            for _ in range(max(n, 0)):
                self._eager_step()
                self.after_step()  # logs and checkpoints as for any step
        torch.cuda.current_stream(dev).wait_stream(self.stream)
        torch.cuda.synchronize(dev)
        if self.step >= end - 1:  # nothing (or one step) left: no graph worth capturing
            return
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.gen)
        with self._arithmetic(), torch.cuda.graph(graph, stream=self.stream):
            self._body(capturing=True)
        torch.cuda.synchronize(dev)
        self.graph = graph
        self.compile_s = time.perf_counter() - t0

    def train_step(self) -> None:
        """One step: a graph replay on CUDA (after :meth:`prepare`), else the eager step."""
        if self.graph is not None:
            with torch.cuda.stream(self.stream):
                self.graph.replay()
            self.step += 1
        else:
            self._eager_step()

    def sync(self) -> None:
        wait_for_device(self.stream, self.device)

    # -- bookkeeping -------------------------------------------------------------------------
    def log(self) -> dict[str, Any]:
        """Write one log line from the loss sums since the last one, and reset them."""
        self.sync()
        acc = self.acc.tolist()
        n = max(acc[-1], 1.0)
        rec: dict[str, Any] = {"step": self.step, "epoch": self.step / self.cfg.steps_per_epoch}
        rec.update({k: acc[i] / n for i, k in enumerate(self.loss_names)})
        rec["lr"] = self.cfg.lr * lr_factor(self.cfg, self.step - 1)
        rec["wall_s"] = round(self.wall_s, 3)
        with self.log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self.logger.log("train", self.step, rec)
        self.acc.zero_()
        return rec

    def evaluate(self) -> dict[str, Any] | None:
        """The EMA policy's QoS on the validation networks of the in-loop evaluation; the best
        so far by SELECT_METRIC is kept for ``best.pt``."""
        scenarios = getattr(self.data, "scenario_configs", None)
        if scenarios is None:
            return None
        self.sync()
        t0 = time.perf_counter()
        seeds = validation_seeds(self.cfg.eval_seeds)
        actor = self.ema.make_actor(seed=0)
        policy = ActorPolicy(actor, self.method.name, float(self.data.rbs))
        groups = [(c, seeds) for c in scenarios()]
        results = run_groups(groups, policy, frames=self.cfg.eval_frames)
        return self.record_eval(results, time.perf_counter() - t0)

    def record_eval(self, results: list, seconds: float, runs: int = 1) -> dict[str, Any]:
        """Record one in-loop evaluation (its results, one per validation scenario): the log
        line, the eval log and the best checkpoint so far. ``runs`` > 1: the evaluation was
        made with that many runs' agents planned together (``macdmp.methods.joint``), in
        ``seconds`` for all of them."""
        rec: dict[str, Any] = {"step": self.step, "epoch": self.step / self.cfg.steps_per_epoch}
        for key in ("avg_reward", "mean_delay_ms", "throughput_mbps", "loss_rate", LOSS_AWARE):
            per_seed = np.nanmean([getattr(r, key) for r in results], axis=0)
            rec[key] = float(np.mean(per_seed))
            rec[key + "_std"] = float(np.std(per_seed))
        rec["eval_s"] = round(seconds, 3)
        if runs > 1:
            rec["eval_runs"] = runs
        if np.isfinite(rec[SELECT_METRIC]) and rec[SELECT_METRIC] < self.best["value"]:
            self.best = {"value": rec[SELECT_METRIC], "step": self.step}
            self._best_weights = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        with self.eval_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self.logger.log("eval", self.step, rec)
        return rec

    def after_step(self) -> dict[str, Any] | None:
        """Logs, evaluation and checkpoints due after the step just taken."""
        cfg, rec = self.cfg, None
        if self.step % cfg.log_every == 0 or self.step == cfg.total_steps:
            rec = self.log()
        if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.total_steps):
            ev = self.evaluate()
            if ev is not None and rec is not None:
                rec = {**rec, "eval_delay_ms": ev["mean_delay_ms"]}
        if self.step % cfg.ckpt_every == 0 or self.step == cfg.total_steps:
            self.sync()
            self.save()
        return rec

    # -- the loop ----------------------------------------------------------------------------
    def run(self, progress: bool = True, stop_after: int | None = None) -> Path:
        """Train to total_steps (or ``stop_after`` more steps). Ctrl-C or SIGTERM: save the last
        whole step and raise TrainingInterrupted. Returns the checkpoint path."""
        train_packed([self], progress=progress, stop_after=stop_after)
        return self.ckpt_path


def train_packed(
    trainers: Sequence[Trainer], progress: bool = True, stop_after: int | None = None
) -> None:
    """Train several runs at once, round-robin, one step each in turn.

    On a GPU each run replays its own captured graph on its own CUDA stream, so the runs' small
    kernels overlap on the device (docs/guide/training.md has the measurements). Each run keeps
    its own folder, log, generator and checkpoints, exactly as if it had been trained alone.
    """
    ends = [
        tr.cfg.total_steps if stop_after is None else min(tr.cfg.total_steps, tr.step + stop_after)
        for tr in trainers
    ]
    total = sum(tr.cfg.total_steps for tr in trainers)
    bar = progress_bar(
        total=total,
        initial=sum(tr.step for tr in trainers),
        desc="train" if len(trainers) == 1 else f"train x{len(trainers)}",
        disable=not progress,
        unit="step",
    )
    t0 = time.perf_counter()
    starts = [tr.wall_s for tr in trainers]
    active = [i for i, tr in enumerate(trainers) if tr.step < ends[i]]
    with stop_requests() as stop:
        try:
            for tr, end in zip(trainers, ends, strict=True):
                tr.method.train()
                tr.prepare(end)  # its warm-up steps are ordinary steps, logged and saved as such
            while active and not stop:
                for i in list(active):
                    tr = trainers[i]
                    tr.train_step()
                    tr.wall_s = starts[i] + time.perf_counter() - t0
                    rec = tr.after_step()
                    bar.update(1)
                    if rec is not None and len(trainers) == 1:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}")
                    if tr.step >= ends[i]:
                        active.remove(i)
                        tr.sync()
                        tr.save()
        finally:
            bar.close()
        if stop:
            _save_all(trainers, stop)


def _save_all(trainers: Sequence[Trainer], stop: StopFlag) -> None:
    for tr in trainers:
        tr.sync()
        tr.save()
    raise TrainingInterrupted(
        f"signal {stop.signum}: stopped at step "
        + ", ".join(str(tr.step) for tr in trainers)
        + "; checkpoints saved, run the same command to resume"
    )


def train(
    cfg: TrainConfig,
    data: Any,
    run_dir: str | Path,
    method: str | type[Method] = "ma-cdmp",
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    capture: bool | None = None,
    compile: bool = False,
) -> Path:
    """Train (or resume) a run folder to completion; returns the checkpoint path."""
    tr = Trainer(method, cfg, data, run_dir, device, capture=capture, compile=compile)
    try:
        return tr.run(progress=progress, stop_after=stop_after)
    finally:
        tr.close()


def open_trainers(
    runs: Sequence[tuple[str, TrainConfig, str | Path, str | Path]],
    device: str | torch.device | None = None,
    capture: bool | None = None,
    compile: bool = False,
    restart_mismatched: bool = False,
    logger: str = "none",
) -> list[Trainer]:
    """A Trainer for each ``(method, config, dataset file, run folder)``; runs that read the
    same file with the same horizon, discount and reward share one set of windows.
    ``restart_mismatched``: a run folder made with other settings is deleted and started again
    (the reproduction's work folders) instead of refused."""
    windows: dict[tuple[str, int, float, str], Any] = {}
    trainers = []
    for method, cfg, data_path, run_dir in runs:
        key = (str(data_path), cfg.horizon, cfg.gamma, cfg.reward)
        if key not in windows:
            windows[key] = open_windows(key[0], horizon=key[1], gamma=key[2], reward=key[3])
        try:
            tr = Trainer(method, cfg, windows[key], run_dir, device, capture, compile, logger)
        except CheckpointMismatchError:
            if not restart_mismatched:
                raise
            shutil.rmtree(run_dir)
            tr = Trainer(method, cfg, windows[key], run_dir, device, capture, compile, logger)
        trainers.append(tr)
    return trainers


def read_losses(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged loss records of a run folder, in order."""
    return read_jsonl(Path(run_dir) / "losses.jsonl")


def read_evals(run_dir: str | Path) -> list[dict[str, Any]]:
    """The in-loop evaluation records of a run folder (empty without eval_every)."""
    path = Path(run_dir) / "evals.jsonl"
    if not path.exists():
        return []
    return read_jsonl(path)
