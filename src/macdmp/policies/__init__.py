"""Non-learning allocators and the behaviour policy (one batched interface)."""

from .allocators import ALLOCATORS, POLICY_NAMES, Policy, PolicyError, make_policy

__all__ = ["ALLOCATORS", "POLICY_NAMES", "Policy", "PolicyError", "make_policy"]
