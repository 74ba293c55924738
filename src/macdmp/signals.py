"""Ctrl-C and SIGTERM handled alike: long commands stop at a safe point and keep their work.

``stop_requests()`` makes both signals set a flag that a loop polls at its safe points (the
trainer: between optimiser steps, so the saved state is always that of a whole step). A second
signal while the first is being handled raises KeyboardInterrupt at once. ``sigterm_raises()``
makes SIGTERM raise KeyboardInterrupt like Ctrl-C, for code whose cleanup already runs on it
(dataset collection removes its partial file).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set by the first SIGINT or SIGTERM; ``signum`` tells which."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_requests() -> Iterator[StopFlag]:
    """Within the block, SIGINT/SIGTERM set the yielded flag instead of interrupting."""
    flag = StopFlag()
    if not _main_thread():  # signal handlers can only be set from the main thread
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag:
            raise KeyboardInterrupt
        flag.signum = signum

    old = {s: signal.signal(s, handler) for s in HANDLED}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, as Ctrl-C does."""
    if not _main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
