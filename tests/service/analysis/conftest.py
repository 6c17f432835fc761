"""Fixtures for the results tests: raw events kept for a numpy reference, and that reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

BASE = datetime(2026, 1, 10, 0, 0, 0, 123_456, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


@dataclass
class Raw:
    """Raw events as sent, kept for the independent numpy reference."""

    exposures: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)

    def expose(self, unit: str, variant: str, ts: datetime, experiment: str) -> None:
        self.exposures.append(
            {
                "event_id": f"x-{len(self.exposures)}-{unit}",
                "type": "exposure",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
                "timestamp": iso(ts),
            }
        )

    def convert(self, unit: str, name: str, ts: datetime, value: float | None = None) -> None:
        event: dict[str, Any] = {
            "event_id": f"c-{len(self.conversions)}-{unit}",
            "type": "conversion",
            "name": name,
            "unit_id": unit,
            "timestamp": iso(ts),
        }
        if value is not None:
            event["value"] = value
        self.conversions.append(event)


@pytest.fixture
def results(client: Any, keys: dict[str, dict[str, str]]) -> Any:
    def get(key: str) -> dict[str, Any]:
        r = client.get(f"/v1/experiments/{key}/results", headers=keys["viewer"])
        assert r.status_code == 200, r.text
        return dict(r.json())

    return get


@pytest.fixture
def raw() -> Raw:
    return Raw()


@pytest.fixture
def new_raw() -> type[Raw]:
    """The ``Raw`` class, for tests that need a second batch."""
    return Raw


@pytest.fixture
def base() -> datetime:
    """The reference time of the synthetic events (microseconds set: exercises the carry)."""
    return BASE


def micros(ts: datetime) -> int:
    """Microseconds since BASE (exact integer arithmetic)."""
    d = ts - BASE
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def us(**kw: float) -> timedelta:
    return timedelta(**kw)


@pytest.fixture
def reference() -> Any:
    """Per-unit values computed with numpy from the raw rows (independent of the SQL)."""

    def per_unit(
        raw: Raw,
        *,
        experiment: str,
        overrides: set[str],
        window_hours: float | None,
        pre_days: int | None,
        stopped_at: datetime | None = None,
    ) -> dict[str, Any]:
        exp_rows = [e for e in raw.exposures if e["experiment"] == experiment]
        first: dict[str, tuple[int, str]] = {}
        seen: dict[str, set[str]] = {}
        for e in exp_rows:
            t = micros(datetime.fromisoformat(e["timestamp"]))
            seen.setdefault(e["unit_id"], set()).add(e["variant"])
            if e["unit_id"] not in first or t < first[e["unit_id"]][0]:
                first[e["unit_id"]] = (t, e["variant"])
        multiple = {u for u, vs in seen.items() if len(vs) > 1}
        units = sorted(u for u in first if u not in multiple and u not in overrides)
        index = {u: i for i, u in enumerate(units)}
        first_ts = np.array([first[u][0] for u in units], dtype=np.int64)
        variant = np.array([first[u][1] for u in units])
        conv = [c for c in raw.conversions if c["unit_id"] in index]
        cu = np.array([index[c["unit_id"]] for c in conv], dtype=np.int64)
        ct = np.array(
            [micros(datetime.fromisoformat(c["timestamp"])) for c in conv], dtype=np.int64
        )
        cv = np.array([float(c.get("value", 1.0)) for c in conv])
        cn = np.array([c["name"] for c in conv])
        dt = ct - first_ts[cu]
        post = dt >= 0
        if window_hours is not None:
            post &= dt < round(window_hours * 3600 * 1_000_000)
        if stopped_at is not None:
            post &= ct <= micros(stopped_at)
        pre = np.zeros_like(post)
        if pre_days is not None:
            pre = (dt < 0) & (dt >= -pre_days * 86_400 * 1_000_000)
            if stopped_at is not None:
                pre &= ct <= micros(stopped_at)

        def agg(name: str, how: str, mask: np.ndarray) -> np.ndarray:
            sel = mask & (cn == name)
            if how == "binomial":
                return (np.bincount(cu[sel], minlength=len(units)) > 0).astype(float)
            weights = np.ones(int(sel.sum())) if how == "count" else cv[sel]
            return np.bincount(cu[sel], weights=weights, minlength=len(units)).astype(float)

        return {
            "units": units,
            "variant": variant,
            "multiple": len(multiple),
            "overridden": len([u for u in first if u in overrides]),
            "post": lambda name, how: agg(name, how, post),
            "pre": lambda name, how: agg(name, how, pre),
        }

    return per_unit
