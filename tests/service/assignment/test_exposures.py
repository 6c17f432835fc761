"""POST /v1/assign with log_exposure: exposures go through the events domain, once per unit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text


def _exposures(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id, unit_id, variant, phase FROM exposure ORDER BY unit_id")
        ).all()
    return [tuple(r) for r in rows]


def test_log_exposure_stores_one_exposure_per_unit_and_phase(
    client: Any, sdk: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    make_experiment("logged", start=True, overrides={"qa": "treatment"})
    make_experiment("drafty")
    answers = {}
    for unit in ("u1", "u2", "u1", "qa"):
        r = client.post("/v1/assign", json={"unit_id": unit, "log_exposure": True}, headers=sdk)
        assert r.status_code == 200
        answers[unit] = {a["experiment"]: a for a in r.json()["assignments"]}
    rows = _exposures(engine)
    # u1 twice → one row; qa is an override and drafty is not running → not analysed, not logged.
    assert [(unit, variant, phase) for _, unit, variant, phase in rows] == [
        ("u1", answers["u1"]["logged"]["variant"], 1),
        ("u2", answers["u2"]["logged"]["variant"], 1),
    ]
    for event_id, *_ in rows:
        assert uuid.UUID(event_id).version == 5


def test_without_log_exposure_nothing_is_written(
    client: Any, sdk: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    make_experiment("quiet", start=True)
    assert client.post("/v1/assign", json={"unit_id": "u1"}, headers=sdk).status_code == 200
    assert _exposures(engine) == []


def test_exposure_ids_are_deterministic_and_distinct() -> None:
    from service.assignment.service import exposure_event_id

    a = exposure_event_id("exp", 1, "u:1", "control")
    assert a == exposure_event_id("exp", 1, "u:1", "control")
    others = {
        exposure_event_id("exp", 2, "u:1", "control"),
        exposure_event_id("exp", 1, "u", "1:control"),
        exposure_event_id("exp", 1, "u:1", "treatment"),
        exposure_event_id("exp:1", 1, "u", "control"),
    }
    assert a not in others and len(others) == 4
