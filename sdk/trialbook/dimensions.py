"""The attributes an exposure carries: the experiment's ``dimensions`` (product.md §5, §12).

The SDK config lists, per experiment, the attribute names its results are sliced by. An
exposure carries the unit's values of those attributes only (never the rest of the unit's
attributes), and only values the server keeps: strings of at most 256 characters without
control characters, finite numbers and booleans. A value the server would refuse is left out
(the unit is then in the ``unknown`` slice) rather than losing the exposure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["exposure_attributes"]

_MAX_TEXT = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _keeps(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= _MAX_TEXT and _CONTROL.search(value) is None
    return False


def exposure_attributes(
    config: object, experiment: str, attributes: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The experiment's dimensions among the unit's attributes; never raises.

    Parameters
    ----------
    config : object
        The SDK config (``GET /v1/sdk/config``), as parsed JSON.
    experiment : str
        The experiment key.
    attributes : Mapping or None
        The unit's attributes given to the assignment.

    Returns
    -------
    dict or None
        ``{dimension: value}`` for the dimensions the unit has a usable value of; None when
        there are none (the exposure then carries no ``attributes``).
    """
    if not attributes or not isinstance(config, Mapping):
        return None
    try:
        experiments = config.get("experiments")
        exp = experiments.get(experiment) if isinstance(experiments, Mapping) else None
        dims = exp.get("dimensions") if isinstance(exp, Mapping) else None
        if not dims or not isinstance(dims, list):
            return None
        out = {
            d: attributes[d]
            for d in dims
            if isinstance(d, str) and d in attributes and _keeps(attributes[d])
        }
    except Exception:  # a malformed config or attribute mapping: no attributes, never an error
        return None
    return out or None
