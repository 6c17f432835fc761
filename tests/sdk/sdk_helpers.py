"""Shared builders of SDK test configs."""

from __future__ import annotations

import copy
from typing import Any

BASE_CONFIG: dict[str, Any] = {
    "hash_version": 1,
    "layers": {"checkout": {"seed": "k3j4h5", "holdout_fraction": 0.05}},
    "experiments": {
        "new-checkout": {
            "key": "new-checkout",
            "status": "running",
            "seed": "a1b2c3d4",
            "phase": 1,
            "randomization_unit": "user_id",
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "treatment", "weight": 0.5, "is_control": False},
            ],
            "traffic_fraction": 1.0,
            "targeting": None,
            "overrides": {"qa-user-1": "treatment"},
            "layer": None,
            "layer_range": None,
        }
    },
}


def make_experiment(key: str = "exp", **fields: Any) -> dict[str, Any]:
    """A valid running 50/50 experiment with ``fields`` replaced."""
    exp: dict[str, Any] = copy.deepcopy(BASE_CONFIG["experiments"]["new-checkout"])
    exp["key"] = key
    exp["overrides"] = {}
    exp.update(fields)
    return exp


def make_config(
    *experiments: dict[str, Any], layers: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "hash_version": 1,
        "layers": layers if layers is not None else copy.deepcopy(BASE_CONFIG["layers"]),
        "experiments": {exp["key"]: exp for exp in experiments},
    }
