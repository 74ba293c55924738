"""The offline dataset file: schema, atomic writing, reading and validation.

One HDF5 file (h5py), one group per scenario under `/scenarios`, arrays stacked over that
scenario's trajectories and chunked one trajectory at a time. `docs/guide/datasets.md` documents
every dataset and attribute with its dtype, shape and unit; `SCHEMA` below is the same table in code
and is what `validate` checks.

Time indexing (per trajectory, F frames): `obs[t]` is the observation before action `t`
(`obs[0]`, after reset, is all zeros), `actions[t]` the demand taken after seeing `obs[t]`,
`rewards[t]` what the frame under `actions[t]` returned, `obs[t + 1]` the observation after it.

Writing goes to a hidden temporary file in the destination folder, renamed over the final name
only once complete (`os.replace`), so an interrupted run never leaves a partial file under it.
Every dataset carries a SHA-256 of its content (written as it streams in) and HDF5's Fletcher-32
chunk checksums, so corruption down to a flipped byte is detected: every whole-array read
(`read_array`: `info`, `train`, a resume, `validate`) compares the SHA-256, and
`validate --quick` reads every chunk and compares every hash without the value checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from macdmp.common.outputs import (
    check_output_file,
    disk_errors_named,
    partial_path,
    sweep_partials,
)
from macdmp.common.signals import check_stop
from macdmp.sim.config import ConfigError, ScenarioConfig
from macdmp.sim.core import STAT_FIELDS
from macdmp.sim.seeds import TRAIN_SEED_LIMIT

FORMAT_NAME = "macdmp-offline-dataset"
# Version 2 adds per-frame drops per node (`dropped`), the policy of each trajectory (`policy`)
# and the root attribute `policies`; version 1 files (without them) are still read.
# Version 3 adds the `dropped_route` column of `totals` and, for mobile scenarios, `adjacency_t`.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# Training env seeds live below the evaluation protocol's first seed (2**31).
# Per-trajectory episode totals, columns of `totals`: the core's counters and two more.
# Version 3 adds `dropped_route` (mobile scenarios: no route, or the next hop out of range).
TOTAL_FIELDS_V2 = (*STAT_FIELDS[:6], "queued_end", "reward_sum")
TOTAL_FIELDS = (*TOTAL_FIELDS_V2, "dropped_route")


DROP_FIELDS = ("dropped_buffer", "dropped_retry", "dropped_route")  # every reason, by name


def total_fields(version: int) -> tuple[str, ...]:
    """The columns of `totals` in a file of this format version."""
    return TOTAL_FIELDS if version >= 3 else TOTAL_FIELDS_V2


COMPRESSIONS = ("gzip1", "gzip2", "gzip3", "gzip4", "lzf", "none")
DEFAULT_COMPRESSION = "gzip1"
# Chunks hold at most this many frames of one trajectory (and always one trajectory).
CHUNK_FRAMES = 8192


class DatasetError(ValueError):
    """A dataset file that is missing, unreadable, corrupted, of another version or inconsistent."""


@dataclass(frozen=True)
class Field:
    """One per-scenario dataset: its dtype and shape in terms of T (trajectories), F, N."""

    dtype: str
    shape: tuple[str, ...]
    unit: str
    doc: str


# name -> Field; shapes use T (trajectories of the scenario), F (frames), N (nodes)
SCHEMA: dict[str, Field] = {
    "obs": Field(
        "uint16",
        ("T", "F+1", "N", "4"),
        "packets",
        "[gen, gen_max, tran, tran_max] queue lengths; row 0 is the reset observation",
    ),
    "actions": Field("float32", ("T", "F", "N"), "RBs", "demand a_t taken after obs[t]"),
    "rewards": Field("float32", ("T", "F", "N"), "ms", "r_t = -delay of the frame under a_t"),
    "dropped": Field(
        "uint16", ("T", "F", "N"), "packets", "packets dropped at the node in the frame under a_t"
    ),
    "adjacency": Field("bool", ("T", "N", "N"), "", "1-hop graph (symmetric, no self loops)"),
    "adjacency_t": Field(
        "bool",
        ("T", "F+1", "N", "N"),
        "",
        "(mobile scenarios, version 3) the 1-hop graph of each obs row: the mean field of "
        "obs[t] is over the neighbours of row t; row 0 is `adjacency`",
    ),
    "positions_m": Field("float64", ("T", "N", "2"), "m", "node positions"),
    "is_high": Field("bool", ("T", "N"), "", "high-rate node"),
    "rates_ppf": Field("float64", ("T", "N"), "packets/frame", "own Poisson arrival rate"),
    "carried_ppf": Field("float64", ("T", "N"), "packets/frame", "own + relayed traffic"),
    "seeds": Field("int64", ("T",), "", "environment seed of the trajectory (< 2**31)"),
    "policy": Field("uint8", ("T",), "", "index into the root attribute `policies`"),
    "totals": Field("float64", ("T", "TOT"), "", "episode totals, TOTAL_FIELDS"),
}
ROOT_ATTRS = ("format", "format_version", "behaviour_policy", "collection", "command", "created")
# Datasets and root attributes that version 1 files lack.
SINCE_V2 = ("dropped", "policy")
# Datasets that only the scenarios whose nodes move hold (and only version 3 files).
MOBILE_ONLY = ("adjacency_t",)
ROOT_ATTRS_V2 = ("policies",)
MAX_POLICIES = 255  # `policy` is uint8
GROUP_ATTRS = ("config", "n_trajectories", "n_frames", "n_nodes", "complete")


def _compression_kwargs(name: str) -> dict[str, Any]:
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name.startswith("gzip") and name[4:].isdigit():
        return {"compression": "gzip", "compression_opts": int(name[4:]), "shuffle": True}
    if name == "none":
        return {}
    raise DatasetError(f"compression: {name!r} is not one of {', '.join(COMPRESSIONS)}")


def _dims(field: Field, t: int, f: int, n: int, version: int = FORMAT_VERSION) -> tuple[int, ...]:
    env = {"T": t, "F": f, "F+1": f + 1, "N": n, "TOT": len(total_fields(version))}
    return tuple(env[s] if s in env else int(s) for s in field.shape)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
class DatasetWriter:
    """Streams trajectories into a temporary file; `commit` renames it to the final path."""

    def __init__(self, h5file: Any, compression: str):
        self._f = h5file
        self._comp = _compression_kwargs(compression)
        self._hashes: dict[str, dict[str, Any]] = {}
        self._filled: dict[str, int] = {}

    def add_scenario(self, cfg: ScenarioConfig, n_trajectories: int, frames: int) -> None:
        """Create the group of one scenario for `n_trajectories` trajectories of `frames`."""
        name = cfg.name
        if name in self._hashes:
            raise DatasetError(f"scenarios: {name!r} is listed twice")
        g = self._f.require_group("scenarios").create_group(name)
        g.attrs["config"] = cfg.to_json()
        g.attrs["n_trajectories"] = n_trajectories
        g.attrs["n_frames"] = frames
        g.attrs["n_nodes"] = cfg.n_nodes
        g.attrs["complete"] = False
        keys = schema_fields(FORMAT_VERSION, cfg.mobile)
        for key in keys:
            fld = SCHEMA[key]
            shape = _dims(fld, n_trajectories, frames, cfg.n_nodes)
            chunks = (1, *shape[1:])
            if len(shape) > 2 and shape[1] > CHUNK_FRAMES:
                chunks = (1, CHUNK_FRAMES, *shape[2:])
            # small per-trajectory metadata goes uncompressed in one chunk
            big = key in ("obs", "actions", "rewards", "dropped", "adjacency_t")
            g.create_dataset(
                key,
                shape=shape,
                dtype=np.dtype(fld.dtype),
                chunks=chunks if big else True,
                fletcher32=True,
                **(self._comp if big else {}),
            )
        self._hashes[name] = {key: hashlib.sha256() for key in keys}
        self._filled[name] = 0

    def write(self, scenario: str, arrays: dict[str, np.ndarray]) -> None:
        """Append the next trajectories of `scenario` (every SCHEMA array, stacked on axis 0)."""
        g = self._f["scenarios"][scenario]
        start = self._filled[scenario]
        keys = self._hashes[scenario]
        missing = set(keys) - set(arrays)
        if missing:
            raise DatasetError(f"write: missing arrays {sorted(missing)}")
        count = len(arrays["seeds"])
        for key in keys:
            a = np.ascontiguousarray(arrays[key], dtype=np.dtype(SCHEMA[key].dtype))
            ds = g[key]
            if a.shape[1:] != ds.shape[1:] or len(a) != count:
                raise DatasetError(f"write {scenario}/{key}: shape {a.shape}, file {ds.shape}")
            ds[start : start + count] = a
            self._hashes[scenario][key].update(a.tobytes())
        self._filled[scenario] = start + count

    def finish_scenario(self, scenario: str) -> None:
        g = self._f["scenarios"][scenario]
        if self._filled[scenario] != g.attrs["n_trajectories"]:
            raise DatasetError(
                f"{scenario}: wrote {self._filled[scenario]} of {g.attrs['n_trajectories']} "
                "trajectories"
            )
        for key, h in self._hashes[scenario].items():
            g[key].attrs["sha256"] = h.hexdigest()
        g.attrs["complete"] = True


@contextmanager
def atomic_dataset(
    path: str | os.PathLike,
    attrs: dict[str, Any],
    force: bool = False,
    compression: str = DEFAULT_COMPRESSION,
) -> Iterator[DatasetWriter]:
    """Write a dataset to `path` atomically: the file appears there complete or not at all.

    The hidden partial file (``macdmp.common.outputs.partial_path``) is removed on any failure, a
    pending SIGINT/SIGTERM stops the write before the rename (``macdmp.common.signals.check_stop``),
    stale partial files of dead processes in the folder are swept first, and a full disk (or a
    read-only one) is a one-line ``WriteError`` naming `path`."""
    path = Path(path)
    if path.exists() and not force:
        raise DatasetError(f"--out: {path} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--out: folder {path.parent} does not exist")
    check_output_file("--out", path, force=force)  # a folder or device node: never replaced
    _compression_kwargs(compression)  # fail before creating anything
    sweep_partials(path.parent)
    tmp = partial_path(path)
    try:
        with disk_errors_named(path):
            f = h5py.File(tmp, "w")
            try:
                f.attrs["format"] = FORMAT_NAME
                f.attrs["format_version"] = FORMAT_VERSION
                for key, value in attrs.items():
                    f.attrs[key] = (
                        value if isinstance(value, str | int | float) else json.dumps(value)
                    )
                f.attrs["compression"] = compression
                writer = DatasetWriter(f, compression)
                yield writer
                for name in f.get("scenarios", {}):
                    if not f["scenarios"][name].attrs["complete"]:
                        raise DatasetError(f"{name}: not all trajectories were written")
                f.close()
            except BaseException:
                _abandon(f, tmp)
                raise
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            check_stop()  # the last safe point: a stop now leaves no file either
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _abandon(f: Any, tmp: Path) -> None:
    """Close a dataset being written after a failure without another one: the file is cut to
    nothing first, so that a full disk has room for what HDF5 writes on closing (a close that
    fails leaves HDF5 to try again at exit, where it can crash the process; a second close of
    the same file crashed it at once, so there is no retry)."""
    try:
        os.truncate(tmp, 0)
    except OSError:
        pass
    try:
        f.close()
    except Exception:  # the write already failed; that error is the one reported
        pass


# --------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------
@dataclass
class ScenarioInfo:
    """What the file says about one scenario group (arrays are read on demand)."""

    name: str
    config: ScenarioConfig
    n_trajectories: int
    n_frames: int
    n_nodes: int
    sha256: dict[str, str]


@dataclass
class DatasetHeader:
    """The file's attributes and scenario groups, checked for consistency (not content)."""

    path: Path
    format_version: int
    attrs: dict[str, Any]
    scenarios: dict[str, ScenarioInfo]

    @property
    def behaviour_policy(self) -> dict[str, Any]:
        return self.attrs["behaviour_policy"]

    @property
    def collection(self) -> dict[str, Any]:
        return self.attrs["collection"]

    @property
    def policies(self) -> list[dict[str, Any]]:
        """The description of every policy that produced trajectories; a trajectory's
        ``policy`` value indexes this list (version 1 files: the behaviour policy alone)."""
        if self.format_version < 2:
            return [self.behaviour_policy]
        return self.attrs["policies"]

    @property
    def fields(self) -> tuple[str, ...]:
        """The SCHEMA datasets this file's version has."""
        return schema_fields(self.format_version)

    def fingerprint(self) -> str:
        """SHA-256 over the format version, collection settings, shapes and content hashes."""
        h = hashlib.sha256()
        parts = {
            "format": FORMAT_NAME,
            "version": self.format_version,
            "behaviour_policy": self.behaviour_policy,
            **({"policies": self.policies} if self.format_version >= 2 else {}),
            # where and how fast it was written does not change the data
            "collection": {
                k: v
                for k, v in self.collection.items()
                if k not in ("out", "threads", "compression")
            },
            "scenarios": {
                name: {
                    "config": s.config.to_dict(),
                    "shape": [s.n_trajectories, s.n_frames, s.n_nodes],
                    "sha256": s.sha256,
                }
                for name, s in sorted(self.scenarios.items())
            },
        }
        h.update(json.dumps(parts, sort_keys=True).encode())
        return h.hexdigest()


def schema_fields(version: int, mobile: bool = False) -> tuple[str, ...]:
    """The SCHEMA datasets a scenario of a file of this format version holds (``mobile``: a
    scenario whose nodes move, which alone has ``MOBILE_ONLY``)."""
    return tuple(
        k
        for k in SCHEMA
        if (version >= 2 or k not in SINCE_V2)
        and (k not in MOBILE_ONLY or (mobile and version >= 3))
    )


def _fail(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}")


@contextmanager
def open_h5(path: str | os.PathLike) -> Iterator[Any]:
    """Open a dataset file read-only; unreadable files raise DatasetError, not h5py's OSError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_dir():
        raise _fail(path, "is a folder, not a dataset file")
    if not h5py.is_hdf5(path):
        raise _fail(path, "is not an HDF5 file (wrong file, or its header is damaged)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _fail(
            path, f"cannot be opened as HDF5 (truncated or corrupted?): {_short(exc)}"
        ) from None
    try:
        yield f
    finally:
        f.close()


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200]


def read_header(f: Any, path: str | os.PathLike) -> DatasetHeader:
    """Check the attributes and every group's datasets (names, dtypes, shapes) of an open file."""
    path = Path(path)
    try:
        return _read_header(f, path)
    except DatasetError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError) as exc:
        raise _fail(path, f"metadata unreadable (truncated or corrupted?): {_short(exc)}") from None


def _read_header(f: Any, path: Path) -> DatasetHeader:
    fmt = f.attrs.get("format")
    if fmt != FORMAT_NAME:
        raise _fail(path, f"not a macdmp dataset (attribute 'format' is {fmt!r})")
    version = f.attrs.get("format_version")
    if version is None:
        raise _fail(path, "attribute 'format_version' is missing")
    if int(version) not in READABLE_VERSIONS:
        raise _fail(
            path,
            f"format version {int(version)} is not supported: this macdmp reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; re-collect the data with `macdmp collect`",
        )
    version = int(version)
    attrs: dict[str, Any] = {}
    for key in ROOT_ATTRS + (ROOT_ATTRS_V2 if version >= 2 else ()):
        if key not in f.attrs:
            raise _fail(path, f"attribute {key!r} is missing")
        value = f.attrs[key]
        if key in ("behaviour_policy", "collection", "policies"):
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                raise _fail(path, f"attribute {key!r} is not valid JSON") from None
        attrs[key] = value.item() if isinstance(value, np.generic) else value
    if version >= 2:
        pol = attrs["policies"]
        if (
            not isinstance(pol, list)
            or not 1 <= len(pol) <= MAX_POLICIES
            or not all(isinstance(p, dict) and "name" in p for p in pol)
        ):
            raise _fail(
                path,
                f"attribute 'policies' must be a list of 1 to {MAX_POLICIES} policy "
                "descriptions, each with a 'name'",
            )
    if "scenarios" not in f or len(f["scenarios"]) == 0:
        raise _fail(path, "holds no scenario groups (/scenarios is missing or empty)")
    scenarios: dict[str, ScenarioInfo] = {}
    for name, g in f["scenarios"].items():
        where = f"/scenarios/{name}"
        for key in GROUP_ATTRS:
            if key not in g.attrs:
                raise _fail(path, f"{where}: attribute {key!r} is missing")
        if not bool(g.attrs["complete"]):
            raise _fail(path, f"{where}: incomplete (collection did not finish)")
        try:
            cfg = ScenarioConfig.from_dict(json.loads(g.attrs["config"]))
        except (ValueError, ConfigError) as exc:
            raise _fail(path, f"{where}: stored scenario config is invalid: {exc}") from None
        t, fr, n = (int(g.attrs[k]) for k in ("n_trajectories", "n_frames", "n_nodes"))
        if cfg.n_nodes != n:
            raise _fail(path, f"{where}: n_nodes {n} but its config has {cfg.n_nodes} nodes")
        if t < 1 or fr < 1:
            raise _fail(path, f"{where}: needs >= 1 trajectory and frame, has {t} x {fr}")
        hashes = {}
        for key in schema_fields(version, cfg.mobile):
            fld = SCHEMA[key]
            if key not in g:
                raise _fail(path, f"{where}/{key}: dataset is missing")
            ds = g[key]
            want = _dims(fld, t, fr, n, version)
            if ds.shape != want:
                raise _fail(path, f"{where}/{key}: shape {ds.shape}, expected {want} {fld.shape}")
            if ds.dtype != np.dtype(fld.dtype):
                raise _fail(path, f"{where}/{key}: dtype {ds.dtype}, expected {fld.dtype}")
            if "sha256" not in ds.attrs:
                raise _fail(path, f"{where}/{key}: content hash attribute 'sha256' is missing")
            hashes[key] = str(ds.attrs["sha256"])
        scenarios[name] = ScenarioInfo(name, cfg, t, fr, n, hashes)
    return DatasetHeader(path, version, attrs, scenarios)


def read_array(
    f: Any, path: Path, scenario: str, key: str, sl: Any = (), verify: bool = True
) -> np.ndarray:
    """One dataset (or a slice of it), with read failures (bad checksums) as DatasetError.

    A whole dataset read (``sl`` = ``()``) is checked against its stored SHA-256 unless
    ``verify`` is false, so every load of a file's arrays (``info``, ``train``, a resume,
    ``validate``) refuses data modified or corrupted since it was written."""
    try:
        ds = f["scenarios"][scenario][key]
        a = ds[sl]
    except OSError as exc:
        raise _fail(
            path,
            f"/scenarios/{scenario}/{key}: data unreadable, the file is corrupted or truncated "
            f"({_short(exc)})",
        ) from None
    if verify and isinstance(sl, tuple) and sl == () and "sha256" in ds.attrs:
        if _sha256(a) != str(ds.attrs["sha256"]):
            raise _hash_mismatch(path, scenario, key)
    return a


def _sha256(a: np.ndarray) -> str:
    """The content hash the writer stores: SHA-256 of the C-ordered bytes."""
    return hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()


def _hash_mismatch(path: Path, scenario: str, key: str) -> DatasetError:
    return _fail(
        path,
        f"/scenarios/{scenario}/{key}: content hash mismatch, the data was modified or "
        "corrupted after it was written (its SHA-256 differs from the one stored with it)",
    )


# Digests are streamed over blocks of trajectories of about this many bytes.
DIGEST_BLOCK_BYTES = 64 * 2**20


def verify_digests(f: Any, header: DatasetHeader) -> None:
    """Read every chunk of every dataset (HDF5 checks its Fletcher-32) and compare each
    dataset's SHA-256 with the stored one, a block of trajectories at a time (bounded memory);
    raises DatasetError naming the first damaged dataset."""
    for name, s in header.scenarios.items():
        g = f["scenarios"][name]
        for key, want in s.sha256.items():
            ds = g[key]
            row = max(int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize, 1)
            step = max(1, DIGEST_BLOCK_BYTES // row)
            h = hashlib.sha256()
            for start in range(0, ds.shape[0], step):
                block = read_array(f, header.path, name, key, np.s_[start : start + step])
                h.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8))
            if h.hexdigest() != want:
                raise _hash_mismatch(header.path, name, key)


def load_scenario_arrays(
    f: Any, header: DatasetHeader, scenario: str, keys: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """Every SCHEMA array of the file's version (or those of `keys` it has) of one scenario,
    read into memory; arrays a version 1 file lacks are left out."""
    have = tuple(header.scenarios[scenario].sha256)  # the datasets this scenario holds
    return {k: read_array(f, header.path, scenario, k) for k in keys or have if k in have}


def check_content(
    header: DatasetHeader, name: str, arrays: dict[str, np.ndarray], hashes: bool = True
) -> None:
    """Value checks on one scenario's arrays; `hashes` also compares the stored SHA-256s."""
    s = header.scenarios[name]
    where = f"/scenarios/{name}"
    fail = lambda what: _fail(header.path, f"{where}/{what}")  # noqa: E731
    if hashes:
        for key, want in s.sha256.items():
            got = hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
            if got != want:
                raise fail(f"{key}: content hash mismatch, the data was modified or corrupted")
    obs, act, rew = arrays["obs"], arrays["actions"], arrays["rewards"]
    cap = s.config.queue_capacity
    if obs.max(initial=0) > cap:
        raise fail(f"obs: queue length {int(obs.max())} exceeds the capacity {cap}")
    if np.any(obs[:, 0] != 0):
        raise fail("obs: row 0 (the reset observation) must be all zeros")
    if not np.all(np.isfinite(act)) or act.min(initial=0) < 0:
        raise fail("actions: demands must be finite and >= 0 RBs")
    if not np.all(np.isfinite(rew)) or rew.max(initial=0) > 0:
        raise fail("rewards: must be finite and <= 0 (minus a delay in ms)")
    adj = arrays["adjacency"]
    if np.any(adj != adj.transpose(0, 2, 1)) or np.any(np.diagonal(adj, axis1=1, axis2=2)):
        raise fail("adjacency: must be symmetric with no self loops")
    if "adjacency_t" in arrays:
        adj_t = arrays["adjacency_t"]
        if np.any(adj_t != adj_t.swapaxes(2, 3)) or np.any(np.diagonal(adj_t, axis1=2, axis2=3)):
            raise fail("adjacency_t: every frame's graph must be symmetric with no self loops")
        if np.any(adj_t[:, 0] != adj):
            raise fail("adjacency_t: row 0 must be `adjacency`, the graph at the start")
    if np.any(adj.sum(axis=2) == 0):
        raise fail("adjacency: a node has no neighbour (the graph must be connected)")
    hi = arrays["is_high"].sum(axis=1)
    if np.any(hi != s.config.n_high):
        raise fail(f"is_high: every trajectory must have n_high={s.config.n_high} high-rate nodes")
    seeds = arrays["seeds"]
    if seeds.min() < 0 or seeds.max() >= TRAIN_SEED_LIMIT:
        raise fail("seeds: training env seeds must lie in [0, 2**31)")
    if len(np.unique(seeds)) != len(seeds):
        raise fail("seeds: a trajectory seed appears twice")
    tot = arrays["totals"]
    col = {k: i for i, k in enumerate(total_fields(header.format_version))}
    dropped = sum(tot[:, col[k]] for k in DROP_FIELDS if k in col)
    balance = tot[:, col["delivered"]] + dropped + tot[:, col["queued_end"]]
    if np.any(balance != tot[:, col["generated"]]):
        raise fail("totals: generated != delivered + dropped + queued at the end")
    rsum = rew.astype(np.float64).sum(axis=(1, 2))
    if not np.allclose(rsum, tot[:, col["reward_sum"]], rtol=1e-4, atol=1e-3 * rew.shape[1]):
        raise fail("totals: reward_sum does not match the rewards array")
    if "dropped" in arrays:
        drops = arrays["dropped"].astype(np.int64).sum(axis=(1, 2))
        if np.any(drops != dropped):
            raise fail("dropped: per-node drops do not add up to the totals' drops")
    if "policy" in arrays:
        n_pol = len(header.policies)
        if arrays["policy"].max(initial=0) >= n_pol:
            raise fail(f"policy: a trajectory's policy index is not below len(policies) = {n_pol}")


def all_seeds(header: DatasetHeader, f: Any) -> np.ndarray:
    """Every trajectory's env seed, concatenated in scenario order."""
    return np.concatenate([read_array(f, header.path, name, "seeds") for name in header.scenarios])


def validate(path: str | os.PathLike, content: bool = True) -> DatasetHeader:
    """Check a dataset file; raises DatasetError naming the first problem found. Without
    ``content`` (``validate --quick``): the structure, every chunk's checksum and every content
    hash, but not the value checks."""
    with open_h5(path) as f:
        header = read_header(f, path)
        if not content:  # quick: every chunk read and every content hash compared
            verify_digests(f, header)
        else:  # reading the arrays compares their hashes (read_array)
            for name in header.scenarios:
                check_content(header, name, load_scenario_arrays(f, header, name), hashes=False)
            seeds = all_seeds(header, f)
            if len(np.unique(seeds)) != len(seeds):
                raise _fail(header.path, "seeds: two trajectories share an env seed")
    return header


def qos_summary(header: DatasetHeader, totals: np.ndarray, name: str) -> dict[str, float]:
    """The behaviour policy's QoS over one scenario's stored episode totals (or those of some
    of its trajectories)."""
    s = header.scenarios[name]
    n_traj = max(len(totals), 1)
    col = {k: i for i, k in enumerate(total_fields(header.format_version))}
    tot = totals.sum(axis=0)
    seconds = s.n_frames * s.config.frame_ms / 1000.0
    gen = tot[col["generated"]]
    dropped = sum(tot[col[k]] for k in DROP_FIELDS if k in col)
    return {
        "throughput_mbps": float(
            tot[col["delivered"]] * s.config.packet_bits / seconds / n_traj / 1e6
        ),
        "delay_ms": float(tot[col["delay_sum_ms"]] / max(tot[col["delivered"]], 1.0)),
        "loss_rate": float(dropped / max(gen, 1.0)),
        "avg_reward": float(tot[col["reward_sum"]] / (n_traj * s.n_frames * s.n_nodes)),
    }
