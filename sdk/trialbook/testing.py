"""An in-memory client double for your own tests: fixed assignments, recorded events.

Example::

    from trialbook.testing import FakeClient

    def test_checkout_shows_the_new_button():
        client = FakeClient({"new-checkout": "treatment"})
        page = render_checkout(client, user_id="u1")      # your code calls client.assign/track
        assert "new-button" in page
        assert client.exposures[0]["variant"] == "treatment"
        assert [c["name"] for c in client.conversions] == ["purchase"]

It satisfies :class:`trialbook.client.ClientLike`, never touches the network, and records events
in the same JSON shape the real client sends (``event_id`` is a UUIDv7, timestamps ISO-8601 UTC).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from trialbook._events import iso_timestamp, uuid7
from trialbook._transport import MockTransport, Request, Response
from trialbook.assignment import Assignment, CompiledConfig, Reason, compile_config

__all__ = ["FakeClient", "MockTransport", "Request", "Response"]


class FakeClient:
    """A drop-in double of :class:`trialbook.Client` for tests.

    Parameters
    ----------
    assignments : Mapping, optional
        ``{experiment: variant}`` gives every unit that variant; ``{experiment: {unit_id:
        variant}}`` fixes single units. Fixed answers have reason ``split`` and
        ``in_experiment`` True.
    config : Mapping, optional
        A real SDK config evaluated for everything not fixed above (same algorithm as
        :class:`trialbook.Client`); without it other experiments are ``unknown_experiment``.

    Attributes
    ----------
    exposures : list of dict
        Exposure events, one per (experiment, phase, unit, variant) like the real client.
    conversions : list of dict
        Conversion events in call order.
    """

    def __init__(
        self,
        assignments: Mapping[str, str | Mapping[str, str]] | None = None,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._everyone: dict[str, str] = {}
        self._per_unit: dict[tuple[str, str], str] = {}
        for experiment, fixed in (assignments or {}).items():
            if isinstance(fixed, str):
                self._everyone[experiment] = fixed
            else:
                for unit_id, variant in fixed.items():
                    self._per_unit[(experiment, unit_id)] = variant
        self._compiled: CompiledConfig | None = (
            compile_config(config) if config is not None else None
        )
        self._seen: set[tuple[str, int | None, str, str | None]] = set()
        self.exposures: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.closed = False

    def set_assignment(self, experiment: str, variant: str, unit_id: str | None = None) -> None:
        """Fix the variant of ``experiment`` for one unit, or for everyone when ``unit_id`` is None.

        Parameters
        ----------
        experiment : str
            The experiment key.
        variant : str
            The variant to return.
        unit_id : str, optional
            The unit; None for every unit.
        """
        if unit_id is None:
            self._everyone[experiment] = variant
        else:
            self._per_unit[(experiment, unit_id)] = variant

    def assign(
        self, experiment: str, unit_id: str, attributes: Mapping[str, Any] | None = None
    ) -> Assignment:
        """Return the fixed or evaluated assignment and record an exposure when in the experiment.

        Parameters
        ----------
        experiment : str
            The experiment key.
        unit_id : str
            The unit id.
        attributes : Mapping, optional
            Used only by config evaluation.

        Returns
        -------
        Assignment
            As the real client would answer.
        """
        unit = str(unit_id)
        variant = self._per_unit.get((experiment, unit), self._everyone.get(experiment))
        if variant is not None:
            result = Assignment(experiment, variant, True, Reason.SPLIT, None)
        elif self._compiled is not None:
            result = self._compiled.evaluate(experiment, unit, attributes)
        else:
            result = Assignment(experiment, None, False, Reason.UNKNOWN_EXPERIMENT, None)
        if result.in_experiment:
            key = (experiment, result.phase, unit, result.variant)
            if key not in self._seen:
                self._seen.add(key)
                now = time.time()
                event: dict[str, Any] = {
                    "event_id": str(uuid7(int(now * 1000))),
                    "type": "exposure",
                    "experiment": experiment,
                    "variant": result.variant,
                    "unit_id": unit,
                    "timestamp": iso_timestamp(now),
                }
                if result.phase is not None:
                    event["phase"] = result.phase
                self.exposures.append(event)
        return result

    def track(
        self,
        name: str,
        unit_id: str,
        value: float | None = None,
        timestamp: datetime | float | None = None,
    ) -> None:
        """Record a conversion event (invalid values are ignored, as the real client drops them).

        Parameters
        ----------
        name : str
            The event name.
        unit_id : str
            The unit id.
        value : float, optional
            The value.
        timestamp : datetime or float, optional
            When; default now.
        """
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return
        if timestamp is None:
            moment = time.time()
        elif isinstance(timestamp, datetime):
            aware = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
            moment = aware.timestamp()
        else:
            moment = float(timestamp)
        event: dict[str, Any] = {
            "event_id": str(uuid7(int(moment * 1000))),
            "type": "conversion",
            "name": name,
            "unit_id": str(unit_id),
            "timestamp": iso_timestamp(moment),
        }
        if value is not None:
            event["value"] = value
        self.conversions.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to send: return True."""
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Mark the double closed and return True."""
        self.closed = True
        return True

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Always ready: return True."""
        return True

    def reset(self) -> None:
        """Forget recorded events and the exposure deduplication."""
        self._seen.clear()
        self.exposures.clear()
        self.conversions.clear()

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
