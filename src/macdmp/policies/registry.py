"""Every policy by name: the allocators, the behaviour policy and trained run folders.

equal | ratio | proportional | maxweight | backpressure | random   rules a node can run
carried | carried-now | centralized     references: network-wide knowledge no node has
behaviour[:SIGMA]        static:D[,D...]
NAME:SIGMA               allocator NAME times mean-one log-normal noise (behaviour = carried:SIGMA)
RUN_DIR[,key=value...]   a training run folder of any method (``macdmp.methods.policy``)
macdmp:RUN_DIR[,...]     the same, in the older spelling
"""

from __future__ import annotations

from pathlib import Path

from macdmp.policies.allocators import ALLOCATORS, REFERENCES, Behaviour, Noisy, Random, Static
from macdmp.policies.base import Policy, PolicyError

POLICY_NAMES = (*ALLOCATORS, "behaviour", "NAME:SIGMA", "RUN_DIR", "macdmp:RUN_DIR")
NOISELESS = ("static", "random")  # allocators that take no noise suffix
POLICY_HELP = (
    f"one of: {', '.join(POLICY_NAMES)}. References, which read network-wide state that no "
    f"node has: {', '.join(REFERENCES)} (carried: the static split from every node's long-run "
    "rate and the routes at the start; carried-now: the same from the rates and routes of now; "
    "centralized: every queue by destination, each frame)"
)
RUN_MARKER = "checkpoint.pt"  # what makes a folder a run (macdmp.methods.checkpoint)


def _run_policy(spec: str, seed: int) -> Policy:
    from macdmp.methods.policy import RunPolicy

    return RunPolicy.from_spec(spec, seed=seed)


def make_policy(spec: str | Policy, seed: int = 0) -> Policy:
    """A policy from its name (see the module docstring); a Policy is returned as it is."""
    if isinstance(spec, Policy):
        return spec
    spec = str(spec)
    if (Path(spec.split(",")[0]) / RUN_MARKER).is_file():
        return _run_policy(spec, seed)
    name, _, arg = spec.partition(":")
    if name == "static":
        try:
            values = [float(v) for v in arg.split(",")] if arg else []
        except ValueError:
            raise PolicyError(f"static: could not read demands from {arg!r}") from None
        return Static(values)
    if name == "behaviour":
        try:
            sigma = float(arg) if arg else 0.5
        except ValueError:
            raise PolicyError(f"behaviour: noise sigma must be a number, got {arg!r}") from None
        return Behaviour(noise=sigma, seed=seed)
    if name == "random" and not arg:
        return Random(seed=seed)
    if name == "macdmp":
        if not arg:
            raise PolicyError("macdmp: give the run folder, e.g. --policy macdmp:runs/demo")
        return _run_policy(arg, seed)
    if name in ALLOCATORS and not arg:
        return ALLOCATORS[name]()
    if name in ALLOCATORS and name not in NOISELESS:
        try:
            sigma = float(arg)
        except ValueError:
            raise PolicyError(f"{name}: noise sigma must be a number, got {arg!r}") from None
        return Noisy(ALLOCATORS[name](), sigma, seed=seed)
    raise PolicyError(
        f"policy: unknown policy {spec!r}; allowed: {', '.join(POLICY_NAMES)} (a run folder "
        f"is one that holds {RUN_MARKER})"
    )
