"""Output paths, checked before the work starts; atomic writes; disk errors in one line.

Every command checks each path it will write with :func:`check_output_file` or
:func:`check_output_dir` before it does any work, so that a bad path costs nothing:

- a folder given where a file is wanted (or a file where a folder is), a device node, FIFO or
  socket (``/dev/null`` would otherwise be replaced by a regular file), or a path below a file
  is refused with a one-line error naming the option;
- an existing file is refused unless the command's ``--force`` is given;
- the folder that will receive the output (or the nearest one that exists) must be writable.

Files are written atomically (:func:`atomic_write_text`, and ``atomic_dataset`` for datasets):
into a hidden ``.NAME.partial-PID@HOST`` beside the target, renamed over it once complete, and
removed on any failure. A process killed outright (SIGKILL, power loss) cannot remove its
partial file; :func:`sweep_partials` removes those of processes of this host that no longer
exist, and every atomic writer calls it on the folder it writes into.

A full disk, a read-only file system or a refused permission met while writing becomes one
:class:`WriteError` that names the path (``macdmp`` prints it on one line), not a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# errno -> what a user is told
DISK_ERRORS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large for the file system",
}
_PARTIAL = re.compile(r"^\.(.+)\.partial-(\d+)(?:@(.+))?$")  # name, pid, host


class WriteError(RuntimeError):
    """Writing an output failed (disk full, read-only, permission); the message names the path."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def partial_path(path: str | os.PathLike) -> Path:
    """The hidden file an atomic writer of ``path`` writes first: ``.NAME.partial-PID@HOST``."""
    path = Path(path)
    return path.parent / f".{path.name}.partial-{os.getpid()}@{_host()}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the partial files in ``folder`` left by processes of this host that have died
    (killed before they could clean up); returns the removed paths. Files of live processes,
    of other hosts (a shared folder) and anything not named like a partial file stay."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # not there (yet) or unreadable: nothing to sweep
        return removed
    host = _host()
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m is None or (m.group(3) is not None and m.group(3) != host):
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if entry.is_symlink() or not entry.is_file():
                continue
            entry.unlink()
            removed.append(entry)
        except OSError:  # removed meanwhile by another sweeper, or not ours to remove
            continue
    return removed


def is_disk_error(exc: BaseException) -> bool:
    """An OSError of a full disk, a quota, a read-only file system or a refused permission
    (also as HDF5 reports it: errno in the message)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in DISK_ERRORS:
        return True
    text = str(exc)
    return any(f"errno = {e}," in text for e in DISK_ERRORS)


def write_error(exc: OSError, path: str | os.PathLike) -> WriteError:
    """``exc`` (a disk error while writing ``path``) as one line that names the path."""
    code = exc.errno
    if code not in DISK_ERRORS:
        code = next((e for e in DISK_ERRORS if f"errno = {e}," in str(exc)), None)
    reason = DISK_ERRORS.get(code) or exc.strerror or str(exc)
    return WriteError(f"{path}: cannot write: {reason}; nothing was written there")


@contextmanager
def disk_errors_named(path: str | os.PathLike) -> Iterator[None]:
    """Within the block, a disk error (see :func:`is_disk_error`) becomes a WriteError naming
    the file it happened on (the final name for a partial file), or else ``path``."""
    try:
        yield
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        where: str | os.PathLike = path
        if isinstance(exc.filename, str) and exc.filename:
            p = Path(exc.filename)
            m = _PARTIAL.match(p.name)
            where = p.parent / m.group(1) if m else p
        raise write_error(exc, where) from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _writable_folder(option: str, folder: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder we can write in."""
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: its target's folder cannot be made
            raise ValueError(f"{option}: {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(probe) else "no write permission"
        raise ValueError(f"{option}: cannot write in folder {probe} ({why})")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_file(option: str, path: str | os.PathLike, force: bool = False) -> Path:
    """Check, before any work, that ``path`` can receive a new file written by ``option``.

    Refused, with a ValueError naming ``option``: a folder; a device node, FIFO or socket (even
    with ``force``); an existing file unless ``force``; a path below a file; a folder that
    cannot be written. Returns ``path`` as a Path."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise ValueError(f"{option}: give a file name (got {str(path)!r})")
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # a parent is a file: reported below
    except OSError as exc:
        raise ValueError(f"{option}: {p} cannot be checked ({exc.strerror or exc})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{option}: {p} is a folder; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(
                f"{option}: {p} is {_kind(st.st_mode)}, not a regular file; it is never "
                "replaced: give a file path"
            )
        if not force:
            raise ValueError(f"{option}: {p} exists; pass --force to overwrite it")
    _writable_folder(option, p.parent)
    return p


def check_output_dir(option: str, path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` is a folder or can be made as one (and written in).
    Refused with a ValueError naming ``option``: a file or device there, a path below a file, a
    folder that cannot be written. Returns ``path`` as a Path."""
    p = Path(path)
    if str(path) == "":
        raise ValueError(f"{option}: give a folder")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option}: {p} exists and is not a folder")
    _writable_folder(option, p)
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (complete or not at all), making its folders;
    refuses to replace a non-regular file; disk errors become a WriteError naming ``path``."""
    path = Path(path)
    with disk_errors_named(path):
        if path.exists() and not path.is_file():
            raise ValueError(f"{path}: not a regular file; it is never replaced")
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_partials(path.parent)
        tmp = partial_path(path)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """``json.loads`` of a file; a damaged file raises ValueError naming it, the line and the
    column (``what`` prefixes the message, e.g. an option)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        prefix = f"{what}: " if what else ""
        raise ValueError(
            f"{prefix}{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})"
        ) from None


def read_jsonl(path: str | os.PathLike, what: str = "") -> list[Any]:
    """The records of a JSON-lines file (blank lines skipped); a damaged line raises ValueError
    naming the file and the line."""
    path = Path(path)
    out = []
    prefix = f"{what}: " if what else ""
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{prefix}{path}: line {k}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
    return out
