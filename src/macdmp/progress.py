"""Progress bars that suit where the output goes: live on a terminal, rare lines in a log."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None = None, desc: str = "", disable: bool = False, **kw: Any):
    """A tqdm bar on stderr: redrawn live on a terminal; otherwise one line every 30 s at most,
    so a log file does not fill with carriage-return updates."""
    from tqdm.auto import tqdm

    if not sys.stderr.isatty():
        kw.setdefault("mininterval", 30.0)
        kw.setdefault("maxinterval", 60.0)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, disable=disable, **kw)
