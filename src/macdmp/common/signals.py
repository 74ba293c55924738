"""Ctrl-C and SIGTERM handled alike: long commands stop at a safe point and keep their work.

Nothing is ever raised from inside the signal handler: it only sets a flag, so that the signal
cannot land in arbitrary code (a weakref callback, h5py's finaliser, an import), where Python
would print "Exception ignored ..." and carry on as if nothing had happened. The flag is read at
safe points:

- ``stop_requests()`` yields the flag to a loop that polls it itself (the trainer: between
  optimiser steps, so the saved state is always that of a whole step);
- ``stop_at_safe_points()`` marks a command whose loops call :func:`check_stop` (collection:
  every frame and before its file is renamed into place; evaluation: every frame); there a
  pending signal raises :class:`Stopped` (a KeyboardInterrupt), whose cleanup removes partial
  files, and ``macdmp`` exits with status 130 as on Ctrl-C.

Blocks nest (``reproduce`` around a collection or a training run) and share one flag, and a
signal is never lost: leaving a block normally with a signal pending raises Stopped there.
:func:`check_stop` obeys the innermost block, so a polling loop (the trainer's) keeps control
of its own stop even when code it calls (its in-loop evaluations) has safe points.
``interruptible()`` marks a blocking wait of our own (a lock, a queue) where the signal may
raise at once. A second signal while the first is pending ends the process at once with the
signal's default action (its partial files are swept by the next writer, ``macdmp.common.outputs``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """Raised at a safe point once SIGINT or SIGTERM has come; ``signum`` tells which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class _Pending:
    """The signal state shared by nested blocks: the first signal's number, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interruptible = 0  # depth of interruptible() blocks


class StopFlag:
    """Set by the first SIGINT or SIGTERM; ``signum`` tells which."""

    def __init__(self, pending: _Pending | None = None, raises: bool = False) -> None:
        self._pending = pending or _Pending()
        self.raises = raises  # whether check_stop() raises within this block

    @property
    def signum(self) -> int | None:
        return self._pending.signum

    def __bool__(self) -> bool:
        return self._pending.signum is not None

    def check(self) -> None:
        """A safe point: raise Stopped if a signal has come."""
        if self._pending.signum is not None:
            raise Stopped(self._pending.signum)


_blocks: list[StopFlag] = []  # the open blocks of the main thread, innermost last


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(pending: _Pending):
    def handler(signum, frame):  # noqa: ARG001
        if pending.signum is not None:  # asked twice: end now, as the signal does by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        pending.signum = signum
        if pending.interruptible:  # a blocking wait of our own: safe to leave at once
            raise Stopped(signum)

    return handler


@contextmanager
def stop_requests(raises: bool = False) -> Iterator[StopFlag]:
    """Within the block, SIGINT/SIGTERM set the yielded flag instead of interrupting.

    ``raises=False``: the block's loop polls the flag itself (``while not stop: ...``) and
    :func:`check_stop` does nothing within it. ``raises=True``: :func:`check_stop` raises
    Stopped. Either way, leaving the block normally with a signal pending raises Stopped."""
    if not _main_thread():  # signal handlers can only be set from the main thread
        yield StopFlag(raises=raises)
        return
    outer = not _blocks
    flag = StopFlag(_Pending() if outer else _blocks[-1]._pending, raises)
    old = {}
    if outer:
        handler = _handler(flag._pending)
        old = {s: signal.signal(s, handler) for s in HANDLED}
    _blocks.append(flag)
    try:
        yield flag
    finally:
        _blocks.remove(flag)
        for s, h in old.items():
            signal.signal(s, h)
    flag.check()  # a signal that came after the last safe point is not lost


def stop_at_safe_points() -> AbstractContextManager[StopFlag]:
    """``stop_requests(raises=True)``: the block's loops stop at their :func:`check_stop` calls.
    Also a decorator."""
    return stop_requests(raises=True)


def sigterm_raises() -> AbstractContextManager[StopFlag]:
    """The old name of :func:`stop_at_safe_points` (SIGTERM stops the block as Ctrl-C does,
    now at safe points instead of wherever the signal lands)."""
    return stop_requests(raises=True)


def check_stop() -> None:
    """A safe point of a long loop: raise Stopped if SIGINT or SIGTERM has come and the
    innermost block is a :func:`stop_at_safe_points` one. Cheap: call it every iteration."""
    if _blocks and _blocks[-1].raises and _blocks[-1] and _main_thread():
        raise Stopped(_blocks[-1].signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block (a blocking wait of our own: a lock, a queue, ``ray.wait``), a signal
    raises Stopped at once, since no other code can be under way there; a signal already
    pending raises on entry. Outside any stop block it changes nothing."""
    if not (_blocks and _main_thread()):
        yield
        return
    pending = _blocks[-1]._pending
    if pending.signum is not None:
        raise Stopped(pending.signum)
    pending.interruptible += 1
    try:
        yield
    finally:
        pending.interruptible -= 1
