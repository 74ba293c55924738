"""The one checkpoint format of every run folder, written atomically, and :func:`load_run`.

A checkpoint is a dict (torch.save) with:
  format "macdmp-run-v1"; method (registry name) and method_version; config (the method's
  config as a dict); fingerprint (the dataset's) and data_path (where it was read); rbs and
  stats (normalisation statistics, tensors); step and wall_s; model and ema (state dicts);
  optimizer; rng (the trainer's generator state); log_acc (the loss sums since the last log
  line); digest ({"sha256": ...}: the content digest of everything else, :func:`content_digest`).
It holds only tensors and plain data (dicts, lists, tuples, str, int, float, bool, None), so it
is read with ``torch.load(weights_only=True)``: loading never unpickles arbitrary objects, and a
file that would need to (a crafted ``__reduce__``) is refused, naming what it asked for, before
anything in it runs. Every load checks the zip archive's CRC-32s and then the digest, so a
damaged or edited file is refused by name.
Files of the older "macdmp-planner-v1" format (MA-CDMP only, before the method interface) are
read on purpose as method "ma-cdmp", version 1. Files written before the digest (numpy arrays in
``stats``, no ``digest``) are still read, safely: numpy's numeric arrays are the only objects
beyond plain data allowed, and the archive's CRC-32s are their integrity check.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from macdmp.common.outputs import disk_errors_named, partial_path, sweep_partials
from macdmp.methods.base import RESUMABLE_KEYS, Method, TrainConfig, get_method

FORMAT = "macdmp-run-v1"
LEGACY_FORMATS = ("macdmp-planner-v1",)
CHECKPOINT_NAME = "checkpoint.pt"
# beside it, with in-loop evaluations: the EMA weights of the best one (macdmp.methods.trainer)
BEST_NAME = "best.pt"
CHECKPOINTS = {"last": CHECKPOINT_NAME, "best": BEST_NAME}  # a run policy's `checkpoint` option
DIGEST_KEY = "digest"
# What older checkpoints (numpy arrays in `stats`) need beyond plain data: numpy's numeric
# arrays. Their reconstruction calls nothing but numpy's array constructor; every object
# inside still goes through torch's restricted unpickler.
_NUMPY_DTYPE_NAMES = (
    "Bool Int8 Int16 Int32 Int64 UInt8 UInt16 UInt32 UInt64 Float16 Float32 Float64"
)
_NUMPY_DTYPES = tuple(getattr(np.dtypes, f"{k}DType") for k in _NUMPY_DTYPE_NAMES.split())
_LEGACY_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, *_NUMPY_DTYPES]


class CheckpointMismatchError(ValueError):
    """A checkpoint was made with another method, configuration or dataset than the one given."""


class CheckpointIntegrityError(CheckpointMismatchError):
    """A checkpoint that is damaged, edited, or would run code when unpickled: refused."""


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with tensors on the CPU and numpy values as tensors / Python numbers; anything
    but tensors and plain data is refused (a checkpoint must load with weights_only=True)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        # a view into a larger buffer (the flat update's) is written as a tensor of its own:
        # torch.save would write the whole buffer behind it
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        return t
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"checkpoint: {where} is a numpy array of dtype {obj.dtype}; only "
                            "numeric and bool arrays can be saved")  # fmt: skip
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) in (dict, OrderedDict):
        out = type(obj)()
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"checkpoint: {where} has a key {k!r}; keys must be str or int")
            out[k] = _plain(v, f"{where}[{k!r}]")
        meta = getattr(obj, "_metadata", None)  # state dicts' module versions
        if meta is not None:
            out._metadata = _plain(meta, f"{where}._metadata")  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"checkpoint: {where} is a {type(obj).__name__}; a checkpoint holds only tensors, "
        "dicts, lists, tuples, str, int, float, bool and None"
    )


def content_digest(obj: Any) -> str:
    """SHA-256 over a checkpoint's content: its structure, keys and plain values, and every
    tensor's dtype, shape and bytes, in order (what :func:`write_checkpoint` stores)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"{{{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        h.update(f"[{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or type(obj) in (bool, int, float, str):
        text = repr(obj)
        h.update(f"{type(obj).__name__}{len(text)}:{text}".encode())
    else:
        raise TypeError(f"checkpoint: cannot digest a {type(obj).__name__}")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the GPU when there is one, else the CPU.

    On CUDA it also turns on cuDNN's autotuner (``torch.backends.cudnn.benchmark``), process-wide:
    without it cuDNN's heuristic picks FFT convolutions for the U-Net's longer sequences, and one
    training step at horizon 64 took 2.6 times as long on an H200 (45.7 against 120.1 steps/s,
    captured; ``docs/notes/results/gpu-2026-11-30d``). The tuning runs once per input shape; the
    algorithms it picks may differ between processes, so GPU results are not bit-identical
    across runs (they were not before either: CUDA's backward passes use atomics)."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but no CUDA device is available")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside ``path`` and rename it over ``path``.

    Serialised in memory first, so that a full disk fails in ``write`` with ENOSPC, reported in
    one line naming ``path`` (``macdmp.common.outputs``), not in torch's zip writer ("unexpected
    pos"); the partial file is named and swept as every writer's is."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    sweep_partials(path.parent)
    tmp = partial_path(path)
    try:
        with disk_errors_named(path):
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint dict atomically: tensors and plain data only (numpy values become
    tensors and Python numbers), with its content digest under ``digest``."""
    plain = _plain(state, "checkpoint")
    plain.pop(DIGEST_KEY, None)
    plain[DIGEST_KEY] = {"sha256": content_digest(plain)}
    save_atomic(plain, path)


def _check_archive(path: Path) -> None:
    """The zip archive torch.save writes: complete, and every entry matching its CRC-32."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointMismatchError(
            f"checkpoint: {path} cannot be read: it is not a complete torch checkpoint archive "
            f"(truncated or damaged? {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        ) from None
    if bad is not None:
        raise CheckpointIntegrityError(
            f"checkpoint: {path} is damaged: its entry {bad!r} fails its CRC-32 check; restore "
            "the file or train the run again"
        )


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a checkpoint's pickle names beyond what loading allows (read, not run)."""
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a pickle too damaged to scan: reported as unreadable instead
        return []


def _load_plain(path: Path, device: torch.device | str) -> Any:
    """torch.load with weights_only=True: nothing in the file is run. A file whose pickle asks
    for anything else (a crafted ``__reduce__``) is refused, naming what it asked for."""
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if unsafe:
            named = ", ".join(unsafe[:4]) + (", ..." if len(unsafe) > 4 else "")
            raise CheckpointIntegrityError(
                f"checkpoint: {path} is refused: unpickling it would call {named}, and a macdmp "
                "checkpoint holds only tensors and plain data, so it was not written by macdmp "
                "or was altered (nothing in it was run); use run folders only from sources you "
                "trust, or train the run again with `macdmp train`"
            ) from None
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointMismatchError(
            f"checkpoint: {path} cannot be read (damaged?): {first}"
        ) from None
    except Exception as exc:  # a torch file of another kind, or damaged
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointMismatchError(f"checkpoint: {path} cannot be read ({first})") from None


def _check_digest(ckpt: dict[str, Any], path: Path) -> None:
    """Pop the stored digest and compare it with the content's (files written before the
    digest have none: their archive's CRC-32s were their check)."""
    digest = ckpt.pop(DIGEST_KEY, None)
    if digest is None:
        return
    want = digest.get("sha256") if isinstance(digest, dict) else None
    try:
        got = content_digest(ckpt)
    except TypeError:
        got = None
    if not isinstance(want, str) or got != want:
        raise CheckpointIntegrityError(
            f"checkpoint: {path} is damaged: its content does not match its SHA-256 digest (the "
            "file was corrupted or edited after it was written); restore the file or train the "
            "run again"
        )


def _stats_arrays(stats: Any, path: Path) -> dict[str, np.ndarray]:
    """The normalisation statistics as numpy arrays (tensors in the file; numpy in older
    files), numeric only."""
    if not isinstance(stats, dict):
        raise CheckpointMismatchError(f"checkpoint: {path}: 'stats' must be a dict of arrays")
    out = {}
    for k, v in stats.items():
        a = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise CheckpointMismatchError(
                f"checkpoint: {path}: stats[{k!r}] has dtype {a.dtype}; it must be numeric"
            )
        out[k] = a
    return out


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (no unpickling of objects), check its integrity (the
    archive's CRC-32s, the content digest) and format tag, and bring older formats up to date.

    Raises CheckpointIntegrityError for a damaged, edited or crafted file, naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    _check_archive(path)
    ckpt = _load_plain(path, device)
    if isinstance(ckpt, dict):
        _check_digest(ckpt, path)
        if "stats" in ckpt:
            ckpt["stats"] = _stats_arrays(ckpt["stats"], path)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt in LEGACY_FORMATS:
        ckpt = dict(ckpt, format=FORMAT, method="ma-cdmp", method_version=1)
        ckpt.setdefault("wall_s", 0.0)
    elif fmt != FORMAT:
        raise CheckpointMismatchError(
            f"checkpoint: {path} is not a {FORMAT} checkpoint (format {fmt!r})"
        )
    return ckpt


def check_compatible(
    ckpt: dict[str, Any],
    method: str,
    cfg: TrainConfig,
    fingerprint: str,
    path: Path | str = "checkpoint",
    data_path: str | os.PathLike | None = None,
) -> None:
    """Refuse (CheckpointMismatchError) a checkpoint of another method, config or dataset
    (``data_path``: the dataset file given now, named in the message)."""
    if ckpt["method"] != method:
        raise CheckpointMismatchError(
            f"{path} holds a {ckpt['method']!r} run, not {method!r}. Use a new --out folder."
        )
    saved = type(cfg).from_dict(ckpt["config"]).to_dict()
    now = cfg.to_dict()
    diff = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}"
        for k in sorted(now)
        if k not in RESUMABLE_KEYS and saved.get(k) != now[k]
    ]
    if diff:
        raise CheckpointMismatchError(
            f"{path} was trained with another configuration; differing fields: "
            + "; ".join(diff)
            + ". Use a new --out folder, or the same settings to resume."
        )
    if ckpt["fingerprint"] != fingerprint:
        then = ckpt.get("data_path")
        then = f"{then} " if then else ""
        now_ = f"{data_path} " if data_path is not None else "this dataset "
        raise CheckpointMismatchError(
            f"{path} was trained on another dataset: {then}(fingerprint "
            f"{ckpt['fingerprint']!r}), not {now_}(fingerprint {fingerprint!r}); a resume must "
            "use the run's own dataset. "
            "Give that file, or use a new --out folder."
        )


def method_from_checkpoint(
    ckpt: dict[str, Any], weights: str = "ema", device: torch.device | str = "cpu"
) -> Method:
    """Rebuild a trained method from a checkpoint dict ('ema' or 'raw' weights), in eval mode.

    The module carries ``.cfg``, ``.rbs``, ``.fingerprint`` and ``.train_step``.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights: must be 'ema' or 'raw' (got {weights!r})")
    cls = get_method(ckpt["method"])
    if int(ckpt["method_version"]) > cls.version:
        raise CheckpointMismatchError(
            f"checkpoint: {ckpt['method']} version {ckpt['method_version']} is newer than this "
            f"code's version {cls.version}; update macdmp"
        )
    cfg = cls.config_class.from_dict(ckpt["config"])
    method = cls(cfg, ckpt["stats"], ckpt["rbs"])
    method.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    method.fingerprint = ckpt["fingerprint"]  # type: ignore[assignment]
    method.train_step = int(ckpt["step"])  # type: ignore[assignment]
    return method.to(device).eval().requires_grad_(False)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CHECKPOINT_NAME).is_file()


def checkpoint_path(run_dir: str | Path, which: str = "last") -> Path:
    """The file of a run folder's ``which`` checkpoint (last or best), checked to exist."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint: must be one of {', '.join(CHECKPOINTS)} (got {which!r})")
    path = Path(run_dir) / CHECKPOINTS[which]
    if which == "best" and not path.is_file():
        raise FileNotFoundError(
            f"checkpoint: {run_dir} has no {BEST_NAME}; a run keeps one when it was trained "
            "with in-loop evaluations (eval_every > 0)"
        )
    return path


def load_run(
    run_dir: str | Path,
    device: str | torch.device | None = None,
    weights: str = "ema",
    checkpoint: dict[str, Any] | None = None,
    which: str = "last",
) -> Method:
    """The trained method of a run folder (EMA weights by default), on ``device``: its last
    checkpoint, or with ``which="best"`` the one its in-loop evaluations chose (``best.pt``);
    ``checkpoint``: that checkpoint when the caller has already read (and so checked) it."""
    run = Path(run_dir)
    if not is_run_dir(run):
        raise FileNotFoundError(
            f"run: {run} is not a training run folder (no {CHECKPOINT_NAME}); train one with "
            "`macdmp train --data FILE --out RUN_DIR`"
        )
    ckpt = checkpoint if checkpoint is not None else read_checkpoint(checkpoint_path(run, which))
    return method_from_checkpoint(ckpt, weights, pick_device(device))
