"""The resumable work list: result files, what is left to do, and the two executors.

Results: ``OUT/results/KEY.json``, written atomically when a unit finishes (an interrupted unit
leaves none); it records the unit's params digest, so a result made with other settings is
*stale* and is redone. A unit is *done* when its result is there and current.

What runs: every unit the chosen figures use that is not done, and, for each of them, any unit
whose product (the dataset file, a run folder in ``WORK``) it needs but which is missing from
the work folder, even if that unit's result exists (a fresh machine without the run folders
retrains what a pending evaluation needs). A second invocation therefore does no work.

Executors: :func:`run_local` runs the units in this process in dependency order (evaluations as
soon as their run exists, training runs packed ``pack`` at a time on a GPU). Several of them may
share one output and work folder (one per GPU, say): a unit is made under a lock
(``WORK/.locks/KEY.lock``, released when its process ends, however it ends), so a unit another
process is making is waited for, not made twice, and the others are done meanwhile. :func:`run_ray`
submits them as Ray tasks, each depending on the tasks of the units it needs, training units
asking for a fraction of a GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from macdmp.common.locking import fcntl  # None without fcntl (Windows): no unit locks
from macdmp.common.outputs import read_json
from macdmp.common.signals import interruptible
from macdmp.methods.base import PLUGINS_ENV
from macdmp.reproduce.plan import Plan, Unit
from macdmp.reproduce.units import (
    product_exists,
    run_data,
    run_eval,
    run_train_group,
    run_unit,
)

RESULTS = "results"
FAILED = "failed"


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    os.replace(tmp, path)


class Store:
    """The result files of one output folder."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / RESULTS

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def read(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        if not p.is_file():
            return None
        return read_json(p)  # a damaged result is named with its file and line

    def status(self, unit: Unit) -> str:
        """done | stale | pending"""
        res = self.read(unit.key)
        if res is None:
            return "pending"
        return "done" if res.get("digest") == unit.digest else "stale"

    def write(self, unit: Unit, result: dict[str, Any]) -> None:
        rec = {
            "key": unit.key,
            "kind": unit.kind,
            "label": unit.label,
            "digest": unit.digest,
            "params": unit.params,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **result,
        }
        write_json_atomic(self.path(unit.key), rec)
        failed = self.out / FAILED / f"{unit.key}.json"
        if failed.exists():
            failed.unlink()

    def fail(self, unit: Unit, error: str) -> None:
        write_json_atomic(self.out / FAILED / f"{unit.key}.json", {"key": unit.key, "error": error})

    def failures(self) -> dict[str, str]:
        d = self.out / FAILED
        if not d.is_dir():
            return {}
        out = {}
        for p in sorted(d.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())["error"]
            except (json.JSONDecodeError, KeyError):
                continue
        return out


def to_run(
    plan: Plan,
    store: Store,
    work: Path,
    figures: list[str] | None = None,
    units: list[str] | None = None,
) -> list[str]:
    """Keys of the units to run, dependencies first (see the module docstring)."""
    order = plan.needed(figures, units)
    todo: set[str] = set()

    def add(k: str) -> None:
        if k in todo:
            return
        todo.add(k)
        for d in plan.units[k].needs:
            dep = plan.units[d]
            if store.status(dep) != "done" or not product_exists(dep, work):
                add(d)

    for k in order:
        if store.status(plan.units[k]) != "done":
            add(k)
    return [k for k in order if k in todo]


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    by_others: list[str] = field(default_factory=list)  # made meanwhile by another process


class UnitLocks:
    """One exclusive lock per unit key among the processes sharing a work folder (``flock``:
    the system drops a lock whose process has ended, even killed). Without ``fcntl`` (Windows)
    nothing is locked, and processes must not share a work folder there."""

    def __init__(self, work: Path) -> None:
        self.dir = Path(work) / ".locks"
        self.held: dict[str, Any] = {}
        self.fcntl = fcntl

    def take(self, key: str, block: bool = False) -> bool:
        """Lock ``key`` for this process; False if another process holds it (and not ``block``)."""
        if self.fcntl is None or key in self.held:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / f"{key}.lock", "a")  # noqa: SIM115 (held until release)
        try:
            self.fcntl.flock(f, self.fcntl.LOCK_EX | (0 if block else self.fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return False
        self.held[key] = f
        return True

    def release(self, key: str) -> None:
        f = self.held.pop(key, None)
        if f is not None:
            f.close()  # closing the file drops its lock


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def run_local(
    plan: Plan,
    store: Store,
    work: Path,
    keys: list[str],
    device: str | None = None,
    pack: int = 1,
    progress: bool = False,
    quiet: bool = False,
    on_result: Callable[[str], None] | None = None,
    compile: bool = False,
    collect_threads: int = 1,
) -> Outcome:
    """Run the units in this process, dependencies first. Evaluations and the dataset go before
    training runs whenever they can (so that what a run is needed for is done while its folder
    exists); ready training runs go ``pack`` at a time (packed on one GPU). A failing unit is
    recorded and its dependents are skipped; the others go on."""
    out = Outcome()
    left = list(keys)
    bad: set[str] = set()
    # The dataset collection sets the simulator's Numba thread count, which with Numba's OpenMP
    # layer is also torch's OpenMP thread count: 2 threads instead of 1 made training steps 20x
    # slower on the busy 2-core machine. The torch setting is put back before every unit.
    torch_threads = torch.get_num_threads()
    t_start = time.perf_counter()
    total = len(keys)
    locks = UnitLocks(work)

    def ready(k: str) -> bool:
        return all(d not in left for d in plan.units[k].needs)

    def finish(u: Unit, result: dict[str, Any], t0: float, c0: float, share: int = 1) -> None:
        # CPU time of this process (all its threads) for the unit: the machine-independent
        # part of its cost on a CPU, whatever else shares the machine (packed runs share it)
        result["cpu_s"] = round((time.process_time() - c0) / share, 2)
        store.write(u, result)
        out.ran.append(u.key)
        _say(f"{count()} {u.key}: done in {time.perf_counter() - t0:.1f} s", quiet)
        if on_result:
            on_result(u.key)

    def count() -> str:
        n = len(out.ran) + len(out.failed) + len(out.skipped) + len(out.by_others)
        return f"[{n}/{total}, {time.perf_counter() - t_start:.0f} s]"

    def made_elsewhere(k: str) -> bool:
        """Whether another process has made unit ``k`` since the work list was drawn up."""
        u = plan.units[k]
        if store.status(u) != "done" or not product_exists(u, work):
            return False
        left.remove(k)
        out.by_others.append(k)
        _say(f"{count()} {k}: made by another process", quiet)
        return True

    while left:
        for k in list(left):  # units whose needs failed
            broken = [d for d in plan.units[k].needs if d in bad]
            if broken:
                left.remove(k)
                bad.add(k)
                out.skipped[k] = f"needs {broken[0]}, which failed"
        if not left:
            break
        now = [k for k in left if ready(k)]
        # a unit is made under its lock; one that another process holds is left for later
        first = next((k for k in now if plan.units[k].kind != "train" and locks.take(k)), None)
        if first is not None:
            group = [first]
        else:
            group = []
            for k in now:
                if plan.units[k].kind == "train" and len(group) < max(1, pack) and locks.take(k):
                    group.append(k)
        if not group:  # all that is ready is being made elsewhere: wait for the first of it
            _say(f"-- waiting for {now[0]}, which another process is making", quiet)
            with interruptible():  # a wait of our own: SIGINT/SIGTERM end it at once
                locks.take(now[0], block=True)
            if made_elsewhere(now[0]):
                locks.release(now[0])
            continue  # else it is ours to make (the other process failed or was stopped)
        for k in list(group):
            if made_elsewhere(k):
                locks.release(k)
                group.remove(k)
        if not group:
            continue
        units = [plan.units[k] for k in group]
        torch.set_num_threads(torch_threads)
        t0, c0 = time.perf_counter(), time.process_time()
        _say(f"-- {', '.join(u.key for u in units)}", quiet)
        try:
            if units[0].kind == "train":
                results = run_train_group(units, work, device, progress, compile)
                for u in units:
                    finish(u, results[u.key], t0, c0, len(units))
            elif units[0].kind == "data":
                finish(units[0], run_data(units[0], work, progress, collect_threads), t0, c0)
            else:
                finish(units[0], run_eval(units[0], work, device, progress), t0, c0)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a unit's failure is recorded; the others go on
            text = _error_text(exc)
            for u in units:
                store.fail(u, text)
                out.failed[u.key] = text
                bad.add(u.key)
            _say(f"{', '.join(group)}: FAILED: {text}", quiet)
            if not quiet:
                traceback.print_exc()
        finally:
            for k in group:
                locks.release(k)
        for k in group:
            left.remove(k)
    return out


# -- Ray ----------------------------------------------------------------------------------------
def _ray_task(unit_key: str, kind: str, params: dict, needs: list, label: str, work: str,
              device: str | None, *deps: Any) -> dict[str, Any]:  # fmt: skip
    """A unit in a Ray worker (``deps``: the results of the units it needs, for ordering)."""
    torch.set_num_threads(1)
    unit = Unit(unit_key, kind, params, tuple(needs), label)
    if device is None and kind != "data":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    c0 = time.process_time()
    result = run_unit(unit, Path(work), device)
    return {**result, "cpu_s": round(time.process_time() - c0, 2)}


def ray_init(address: str, quiet: bool = False) -> Any:
    """Connect to a Ray cluster (``auto``: the one this machine belongs to, else a new local
    instance; or an address such as ``ray://HOST:10001`` or ``HOST:6379``)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise RuntimeError(
            "--ray: Ray is not installed; pip install 'macdmp[ray]' (or pip install ray)"
        ) from None
    if ray.is_initialized():
        return ray
    src = str(Path(__file__).resolve().parents[2])  # workers import macdmp from here too
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    if os.environ.get(PLUGINS_ENV):  # methods given with --plugin: the workers load them too
        env[PLUGINS_ENV] = os.environ[PLUGINS_ENV]
    kw = {"log_to_driver": not quiet, "include_dashboard": False}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env={"env_vars": env}, **kw)
            _say("ray: connected to the running cluster", quiet)
        except ConnectionError:
            ray.init(runtime_env={"env_vars": env}, **kw)
            _say("ray: no running cluster found; started a local Ray instance", quiet)
    else:
        ray.init(address=address, runtime_env={"env_vars": env}, **kw)
    return ray


def run_ray(
    plan: Plan,
    store: Store,
    work: Path,
    keys: list[str],
    address: str = "auto",
    train_gpus: float | None = None,
    eval_gpus: float | None = None,
    device: str | None = None,
    quiet: bool = False,
    on_result: Callable[[str], None] | None = None,
) -> Outcome:
    """Submit the units as Ray tasks. Each task depends on the tasks of the units it needs;
    training units ask for ``train_gpus`` of a GPU (default 0.5 where the cluster has GPUs,
    else none), evaluations for ``eval_gpus`` (default 0.25). The products (dataset, run
    folders) are written to ``work``, which every node must see (a shared file system); the
    results come back to this process, which writes them."""
    ray = ray_init(address, quiet)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        tg = (0.5 if has_gpu else 0.0) if train_gpus is None else float(train_gpus)
        eg = (0.25 if has_gpu else 0.0) if eval_gpus is None else float(eval_gpus)
        return _submit(ray, plan, store, work, keys, (tg, eg), device, quiet, on_result)
    finally:
        ray.shutdown()  # disconnects (and stops the instance this process started, if it did)


def _submit(
    ray: Any,
    plan: Plan,
    store: Store,
    work: Path,
    keys: list[str],
    gpus: tuple[float, float],
    device: str | None,
    quiet: bool,
    on_result: Callable[[str], None] | None,
) -> Outcome:
    tg, eg = gpus
    task = ray.remote(_ray_task)
    refs: dict[str, Any] = {}
    for k in keys:
        u = plan.units[k]
        g = tg if u.kind == "train" else eg if u.kind == "eval" else 0.0
        deps = [refs[d] for d in u.needs if d in refs]
        refs[k] = task.options(num_cpus=1, num_gpus=g, name=k, max_retries=0).remote(
            u.key, u.kind, u.params, list(u.needs), u.label, str(work), device, *deps
        )
    _say(f"ray: {len(refs)} tasks submitted (train GPUs {tg:g}, eval GPUs {eg:g})", quiet)
    out = Outcome()
    by_ref = {r: k for k, r in refs.items()}
    pending = list(refs.values())
    t0 = time.perf_counter()
    try:
        while pending:
            with interruptible():  # a wait of our own: SIGINT/SIGTERM end it at once
                done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                k = by_ref[r]
                u = plan.units[k]
                try:
                    result = ray.get(r)
                except Exception as exc:  # the task (or one it needed) failed
                    text = _error_text(exc).splitlines()[-1]
                    failed_dep = next((d for d in u.needs if d in out.failed), None)
                    if failed_dep is not None or any(d in out.skipped for d in u.needs):
                        out.skipped[k] = f"needs {failed_dep}, which failed"
                    else:
                        out.failed[k] = text
                        store.fail(u, text)
                    _say(f"{k}: FAILED: {text}", quiet)
                    continue
                store.write(u, result)
                out.ran.append(k)
                _say(f"[{len(out.ran)}/{len(refs)}, {time.perf_counter() - t0:.0f} s] {k}", quiet)
                if on_result:
                    on_result(k)
    except KeyboardInterrupt:
        for r in pending:
            ray.cancel(r, force=True)
        raise
    return out
