"""Scenario families: named groups of scenarios in which the allocation must (or need not) adapt.

Each family is a list of scenarios (`config.SCENARIOS`) and the recipe of its offline dataset:
the behaviour mix that records it, its size and its trajectories' length. `macdmp collect
--family NAME` writes a family's dataset; `macdmp sim-study --family NAME` maps every allocator
and reference on it (docs/guide/families.md).

The behaviour mixes are rules a real network could run, perturbed so that the actions vary:
the paper's noisy static split (`behaviour:0.5`) beside noisy max-weight and proportional
allocators, so the data holds adaptive decisions as well as static ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LARGE, PAPER_SCENARIOS, ConfigError

# The dataset mix of every family beyond the paper's, one third of each scenario's
# trajectories each (collect --policies syntax).
ADAPTIVE_MIX = ("behaviour:0.5", "maxweight:0.3", "proportional:0.3")


@dataclass(frozen=True)
class Family:
    name: str
    about: str
    scenarios: tuple[str, ...]
    behaviour: tuple[str, ...]  # the dataset's policy mix
    trajectories: int = 400  # in the family's dataset, split over its scenarios
    frames: int = 3000  # frames per trajectory (15 s)


FAMILIES: dict[str, Family] = {
    "paper": Family(
        "paper",
        "the paper's four scenarios: Poisson traffic at load 0.7, static nodes",
        PAPER_SCENARIOS,
        ("behaviour:0.5",),
        trajectories=1000,
        frames=6000,
    ),
    "load90": Family(
        "load90",
        "the four at load 0.9",
        tuple(f"{s}-load90" for s in PAPER_SCENARIOS),
        ADAPTIVE_MIX,
    ),
    "load100": Family(
        "load100",
        "the four at load 1.0: the frame is as full as the routes allow",
        tuple(f"{s}-load100" for s in PAPER_SCENARIOS),
        ADAPTIVE_MIX,
    ),
    "sessions": Family(
        "sessions",
        "services that come and go: Poisson arrivals of services of exponential lifetime "
        "(1 s mean, 4 active per node on average), each with its own rate and destination; "
        "load 0.7 in the long run",
        tuple(f"{s}-sessions" for s in PAPER_SCENARIOS),
        ADAPTIVE_MIX,
    ),
    "bursty": Family(
        "bursty",
        "two-state Markov-modulated sources: 4x the low rate for 250 ms, the low rate for "
        "750 ms on average; load 0.7 in the long run",
        tuple(f"{s}-bursty" for s in PAPER_SCENARIOS),
        ADAPTIVE_MIX,
    ),
    "mobile": Family(
        "mobile",
        "random waypoint at 150 m/s in 8 km x 8 km, routes recomputed every 20 frames "
        "(100 ms); load 0.7",
        tuple(f"{s}-mobile" for s in PAPER_SCENARIOS),
        ADAPTIVE_MIX,
    ),
    "large": Family(
        "large",
        "16, 32 and 64 nodes in the paper's area by the same load rule (load 0.7)",
        tuple(f"n{n}-large" for n in LARGE),
        ADAPTIVE_MIX,
        trajectories=300,
    ),
}


def family(name: str) -> Family:
    """The named family; ConfigError names the allowed ones."""
    if name not in FAMILIES:
        raise ConfigError(f"family: unknown family {name!r}; allowed: {', '.join(FAMILIES)}")
    return FAMILIES[name]
