"""The policy interface, the non-learning allocators, their registry by name and episodes.

``episodes`` runs any policy of this interface on batches of networks and measures its QoS.
"""

from .allocators import ALLOCATORS
from .base import Policy, PolicyError
from .registry import POLICY_NAMES, REFERENCES_HELP, make_policy

__all__ = ["ALLOCATORS", "POLICY_NAMES", "REFERENCES_HELP", "Policy", "PolicyError", "make_policy"]
