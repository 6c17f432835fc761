"""Trialbook SDK: deterministic local assignment, background event delivery, OpenFeature.

Quick start::

    import trialbook

    with trialbook.Client("https://trialbook.example.com", "sdk-key") as client:
        assignment = client.assign("new-checkout", "user-42", {"country": "FR"})
        if assignment.variant == "treatment":
            ...
        client.track("purchase", "user-42", value=31.5)
"""

from trialbook._delivery import DropReason, DropStats, OnDrop, RetryPolicy
from trialbook.assignment import (
    Assignment,
    CompiledConfig,
    Reason,
    compile_config,
    evaluate,
    validate_config,
)
from trialbook.client import Client, ClientLike, ClientStats
from trialbook.errors import TransportError, TrialbookError
from trialbook.hashing import HASH_VERSION
from trialbook.targeting import validate_condition

__all__ = [
    "HASH_VERSION",
    "Assignment",
    "Client",
    "ClientLike",
    "ClientStats",
    "CompiledConfig",
    "DropReason",
    "DropStats",
    "OnDrop",
    "Reason",
    "RetryPolicy",
    "TransportError",
    "TrialbookError",
    "compile_config",
    "evaluate",
    "validate_condition",
    "validate_config",
]

__version__ = "0.1.0"
