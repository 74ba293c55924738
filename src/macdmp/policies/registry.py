"""The policies of this layer by name: the allocators, the behaviour policy and their noisy forms.

equal | ratio | proportional | maxweight | backpressure | random   rules a node can run
carried | carried-now | centralized     references: network-wide knowledge no node has
behaviour[:SIGMA]        static:D[,D...]
NAME:SIGMA               allocator NAME times mean-one log-normal noise (behaviour = carried:SIGMA)

Training run folders are policies too, one layer up: ``macdmp.methods.load_policy`` reads every
name here and run folders as well (the commands' ``--policy`` goes through it).
"""

from __future__ import annotations

from macdmp.policies.allocators import ALLOCATORS, REFERENCES, Behaviour, Noisy, Random, Static
from macdmp.policies.base import Policy, PolicyError

POLICY_NAMES = (*ALLOCATORS, "behaviour", "NAME:SIGMA")
NOISELESS = ("static", "random")  # allocators that take no noise suffix
REFERENCES_HELP = (
    f"References, which read network-wide state that no node has: {', '.join(REFERENCES)} "
    "(carried: the static split from every node's long-run rate and the routes at the start; "
    "carried-now: the same from the rates and routes of now; centralized: every queue by "
    "destination, each frame)"
)


def make_policy(spec: str | Policy, seed: int = 0) -> Policy:
    """A policy from its name (see the module docstring); a Policy is returned as it is."""
    if isinstance(spec, Policy):
        return spec
    spec = str(spec)
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
    if name in ALLOCATORS and not arg:
        return ALLOCATORS[name]()
    if name in ALLOCATORS and name not in NOISELESS:
        try:
            sigma = float(arg)
        except ValueError:
            raise PolicyError(f"{name}: noise sigma must be a number, got {arg!r}") from None
        return Noisy(ALLOCATORS[name](), sigma, seed=seed)
    raise PolicyError(
        f"policy: unknown policy {spec!r}; allowed: {', '.join(POLICY_NAMES)} (training run "
        "folders are read by macdmp.methods.load_policy)"
    )
