"""The policy interface, the non-learning allocators and the registry of policies by name."""

from .allocators import ALLOCATORS
from .base import Policy, PolicyError
from .registry import POLICY_HELP, POLICY_NAMES, make_policy

__all__ = ["ALLOCATORS", "POLICY_HELP", "POLICY_NAMES", "Policy", "PolicyError", "make_policy"]
