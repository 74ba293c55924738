"""Locks on outputs written in place (a run folder, a dataset being collected), so that two
processes never write the same output at once: the second is refused at once, with a message
naming the holder.

A lock is an ``fcntl.flock`` on a small hidden file: ``.lock`` inside a run folder,
``.NAME.lock`` beside a file. The kernel drops the lock when its process ends, however it ends
(SIGKILL included), so a lock is never stale; the file records the holder's pid, host and start
time, for the message a second writer gets, and is removed when the lock is released (a file
left by a killed process is harmless: the next writer takes it over). Within one process a lock
is reentrant (counted), so the same process may open the same output twice (a resume after a
run, in tests). On a system without ``fcntl`` (Windows) nothing is locked.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RUN_LOCK_NAME = ".lock"

_held: dict[str, list[int]] = {}  # lock file (real path) -> [fd, holders in this process]
_guard = threading.Lock()


class OutputLockedError(RuntimeError):
    """Another process is writing the same output."""


class OutputLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, lock_path: Path, key: str) -> None:
        self.lock_path = lock_path
        self._key = key
        self._released = False

    def release(self) -> None:
        with _guard:
            if self._released:
                return
            self._released = True
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                # unlink while still holding the lock: a process that opened the old file waits
                # for nothing (non-blocking) and one that locks it afterwards sees it unlinked
                try:
                    os.unlink(self.lock_path)
                except OSError:
                    pass
                os.close(entry[0])

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path_for_file(path: str | os.PathLike) -> Path:
    """The lock file of an output file: ``.NAME.lock`` in the same folder."""
    p = Path(path)
    return p.parent / f".{p.name}.lock"


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode())
        return f"pid {int(info['pid'])} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not recorded its pid yet)"


def lock_output(lock_path: str | os.PathLike, what: str) -> OutputLock:
    """Take the lock of an output (``what`` names it in messages), or raise OutputLockedError
    naming the holder. The lock file's folder must exist."""
    lock_path = Path(lock_path)
    key = os.path.realpath(lock_path)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return OutputLock(lock_path, key)
        if fcntl is None:  # pragma: no cover - Windows: no locking
            return OutputLock(lock_path, key)
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{what} is being written by {holder}; wait for it to finish or stop it "
                    f"(lock file {lock_path})"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder may have released and removed the file between our open and flock:
            # then we hold a lock on a removed file, and must lock the current one instead.
            try:
                st = os.stat(lock_path)
                mine = os.fstat(fd)
                same = (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode())
        except OSError:  # a full disk: the lock holds all the same, only the record is lost
            pass
        _held[key] = [fd, 1]
        return OutputLock(lock_path, key)
