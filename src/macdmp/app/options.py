"""Checks and parsers of command-line options shared by several commands.

Each raises a ValueError that names the option and the allowed values, before any work starts.
"""

from __future__ import annotations

from macdmp.common.outputs import check_output_dir, check_output_file
from macdmp.sim.config import RF_MODES, load_scenario

# Upper bounds of a run's size: every episode is one more network stepped at once (about
# 32 KiB each) and every network-frame one more float (8 bytes) of delay trace, so
# MAX_NETWORK_FRAMES keeps that trace within 400 MB (`evaluate` counts every scenario and RF
# condition it runs together).
MAX_EPISODES = 10_000
MAX_SEEDS = 1000
MAX_FRAMES = 1_000_000  # 5,000 s of network time
MAX_NETWORK_FRAMES = 50_000_000


def option_error(option: str, exc: Exception) -> ValueError:
    """`exc` as an error of the command-line option that caused it: `--load: must be > 0 ...`
    (a library message that starts with the parameter's own name gets the option instead)."""
    text = str(exc)
    plain = option.lstrip("-").replace("-", "_")
    for prefix in (f"{plain}: ", f"{plain}s: ", f"{plain.rstrip('s')}: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return ValueError(f"{option}: {text}")


def at_least(name: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise ValueError(f"{name}: must be >= {low} (got {value})")


def check_size(seeds: int, frames: int, groups: int) -> None:
    """--seeds and --frames in range, and not more network-frames than memory holds."""
    at_least("--frames", frames, 1)
    at_least("--seeds", seeds, 1)
    if seeds > MAX_SEEDS:
        raise ValueError(
            f"--seeds: at most {MAX_SEEDS:,} (got {seeds:,}); every seed is one more network "
            "stepped at once in every scenario and RF condition"
        )
    if frames > MAX_FRAMES:
        raise ValueError(f"--frames: at most {MAX_FRAMES:,} (got {frames:,})")
    if seeds * frames * groups > MAX_NETWORK_FRAMES:
        raise ValueError(
            f"--seeds x --frames: {seeds:,} seeds x {frames:,} frames x {groups} scenario/RF "
            f"pairs is {seeds * frames * groups:,} network-frames, above the limit of "
            f"{MAX_NETWORK_FRAMES:,} (8 bytes of delay trace each); lower --seeds or --frames"
        )


def split_rfs(text: str) -> list[str]:
    rfs = [r for r in text.split(",") if r]
    bad = [r for r in rfs if r not in RF_MODES]
    if bad or not rfs:
        raise ValueError(f"--rf: {bad or text!r} not allowed; use a comma list of {RF_MODES}")
    return rfs


def split_scenarios(text: str, option: str = "--scenarios") -> list[str]:
    """A comma list of scenario names or TOML files, each checked by loading it."""
    scenarios = [s for s in text.split(",") if s]
    if not scenarios:
        raise ValueError(f"{option}: give a comma list of scenarios (got {text!r})")
    for s in scenarios:
        try:
            load_scenario(s)
        except ValueError as exc:
            raise option_error(option, exc) from None
    return scenarios


def out_file(option: str, path: str | None, force: bool = False) -> None:
    """Output files may be in folders that do not exist yet (they are made), not in files;
    an existing file needs ``force``; never a device node (``macdmp.common.outputs``)."""
    if path is not None:
        check_output_file(option, path, force=force)


def out_dir(option: str, path: str | None) -> None:
    if path is not None:
        check_output_dir(option, path)
