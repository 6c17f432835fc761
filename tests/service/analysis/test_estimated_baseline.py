"""A protocol without a baseline: the sample size comes from the control arm's ingested data."""

from datetime import UTC, datetime, timedelta
from typing import Any

from scipy.stats import norm

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def _events(n_per_arm: int, converters: dict[str, int]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for variant in ("control", "treatment"):
        for i in range(n_per_arm):
            unit = f"{variant}-{i}"
            events.append(
                {
                    "event_id": f"x-{unit}",
                    "type": "exposure",
                    "experiment": "est",
                    "variant": variant,
                    "unit_id": unit,
                    "timestamp": T0.isoformat(),
                }
            )
            if i < converters[variant]:
                events.append(
                    {
                        "event_id": f"c-{unit}",
                        "type": "conversion",
                        "name": "conversion",
                        "unit_id": unit,
                        "timestamp": (T0 + timedelta(hours=1)).isoformat(),
                    }
                )
    return events


def test_sample_size_is_estimated_from_the_control_arm(
    client: Any, admin: dict[str, str], make_experiment: Any, ingest: Any, results: Any
) -> None:
    body = {"baseline": None, "primary_metric": {"metric": "conversion", "mde": 0.1}}
    exp = make_experiment("est", start=True, **body)
    assert exp["sample_size_per_variant"] is None
    ingest(_events(200, {"control": 40, "treatment": 44}))
    power = results("est")["power"]
    # Hand calculation (unpooled normal approximation) with the observed control rate p1 = 0.2,
    # p2 = 0.22: n = (z_0.975 + z_0.8)^2 (p1 q1 + p2 q2) / (p2 - p1)^2.
    z = norm.ppf(0.975) + norm.ppf(0.8)
    expected = z**2 * (0.2 * 0.8 + 0.22 * 0.78) / 0.02**2
    assert power["sample_size_estimated"] is True
    assert power["estimated_baseline"] == {"rate": 0.2}
    assert abs(power["sample_size_per_variant"] - expected) <= 1
    assert power["progress"] == 200 / power["sample_size_per_variant"]


def test_too_little_data_gives_no_estimate(
    client: Any, admin: dict[str, str], make_experiment: Any, ingest: Any, results: Any
) -> None:
    make_experiment("est", start=True, baseline=None)
    ingest(_events(20, {"control": 4, "treatment": 4}))
    got = results("est")
    assert got["power"]["sample_size_per_variant"] is None
    assert got["power"]["sample_size_estimated"] is False
    assert "no_planned_sample_size" in got["warnings"]
