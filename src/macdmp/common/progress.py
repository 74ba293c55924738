"""Progress bars that keep logs clean: live on a terminal, sparse in a log file.

Every long loop of the package takes its bar from :func:`progress_bar`. On a terminal it is an
ordinary tqdm bar. When stderr is not a terminal (CI, ``make demo > log 2>&1``, nohup) it
prints one plain line at most every ``LOG_INTERVAL_S`` seconds (and one when it finishes), so a
log gets a few lines instead of thousands of carriage-return updates.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between lines when stderr is not a terminal


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class _LogLines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line and line != self.last:  # skip tqdm's blank "clear" writes and repeats
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total: int | float | None, desc: str, disable: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar on stderr: live on a terminal; a line per 30 s when stderr is not one.

    Keep ``desc`` short (a word or two): it is repeated on every redraw. Other keyword
    arguments go to tqdm and override these defaults.
    """
    opts: dict[str, Any] = {"total": total, "desc": desc, "disable": disable}
    if _stderr_is_tty():
        opts["dynamic_ncols"] = True
    else:
        opts.update(
            file=_LogLines(sys.stderr),
            mininterval=LOG_INTERVAL_S,
            maxinterval=LOG_INTERVAL_S,
            ncols=80,
            ascii=True,
        )
    opts.update(kw)
    return tqdm(**opts)
