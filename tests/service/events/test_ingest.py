"""POST /v1/events: validation, idempotency, late events, first exposures, limits and roles."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def post(client: Any, headers: dict[str, str], events: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post("/v1/events", json={"events": events}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


# ------------------------------------------------------------------------------ idempotency


def test_the_same_batch_sent_three_times_is_stored_once(client, sdk, running, events, count):
    batch = events.mixed(400)
    first = post(client, sdk, batch)
    assert first == {"accepted": 400, "duplicates": 0, "conflicts": 0, "rejected": [], "late": 0}
    for _ in range(2):
        again = post(client, sdk, batch)
        assert again == {
            "accepted": 0,
            "duplicates": 400,
            "conflicts": 0,
            "rejected": [],
            "late": 0,
        }
    assert count("exposure") == 200
    assert count("conversion") == 200
    assert count("exposure_unit") == 200


def test_repeats_conflicts_and_malformed_events_are_counted_exactly(
    client, sdk, running, events, count, engine
):
    rng = random.Random(11)
    stored = events.mixed(1000, prefix="a")
    assert post(client, sdk, stored)["accepted"] == 1000

    fresh = events.mixed(880, prefix="b")
    repeats = rng.sample(stored, 100)  # 10 %: identical payloads
    originals = rng.sample([e for e in stored if e not in repeats], 10)
    conflicts = [dict(e, unit_id=e["unit_id"] + "-changed") for e in originals]  # 1 %
    malformed: list[dict[str, Any]] = [  # 1 %
        {"type": "exposure"},
        dict(fresh[0], event_id=events.new_id(), timestamp="2026-03-02T09:00:00"),  # naive
        dict(fresh[1], event_id=events.new_id(), value=True),
        dict(fresh[1], event_id=events.new_id(), value="3"),
        dict(fresh[0], event_id=events.new_id(), timestamp=1767225600),
        dict(fresh[0], event_id=events.new_id(), unit_id="x" * 257),
        dict(fresh[0], event_id=events.new_id(), colour="red"),
        dict(fresh[0], event_id="", type="exposure"),
        dict(fresh[1], event_id=events.new_id(), type="click"),
        dict(fresh[0], event_id=events.new_id(), phase=0),
    ]
    batch: list[Any] = fresh + repeats + conflicts + malformed
    rng.shuffle(batch)
    bad_indexes = sorted(i for i, e in enumerate(batch) if any(e is m for m in malformed))

    answer = post(client, sdk, batch)
    assert answer["accepted"] == 880
    assert answer["duplicates"] == 100
    assert answer["conflicts"] == 10
    assert [r["index"] for r in answer["rejected"]] == bad_indexes
    assert {r["code"] for r in answer["rejected"]} == {"invalid"}
    assert count("exposure") + count("conversion") == 1880
    # The first payload is kept for a conflicting event_id.
    with engine.connect() as conn:
        for e in originals:
            table = e["type"]
            unit = conn.execute(
                text(f"SELECT unit_id FROM {table} WHERE event_id = :i"), {"i": e["event_id"]}
            ).scalar_one()
            assert unit == e["unit_id"]


def test_a_repeat_inside_one_batch_is_a_duplicate_or_a_conflict(client, sdk, running, events):
    a = events.conversion("u1", value=2.0)
    same = dict(a, timestamp=a["timestamp"].replace("Z", "+00:00"), value=2)  # same instant/value
    other = dict(a, value=3.0)
    answer = post(client, sdk, [a, same, other])
    assert (answer["accepted"], answer["duplicates"], answer["conflicts"]) == (1, 1, 1)


def test_a_conversion_without_value_equals_one_with_value_one(client, sdk, running, events):
    a = events.conversion("u1")
    post(client, sdk, [a])
    answer = post(client, sdk, [dict(a, value=1)])
    assert answer["duplicates"] == 1


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"timestamp": "2026-03-02T09:00:00"}, "timezone"),
        ({"timestamp": 1767225600}, "ISO-8601"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"value": True}, "value"),
        ({"value": "1.5"}, "value"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"unit_id": 42}, "unit_id"),
        ({"event_id": "e" * 65}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_malformed_conversion_is_rejected_with_its_index_and_reason(
    client, sdk, running, events, count, change, fragment
):
    good = events.conversion("u1")
    bad = dict(events.conversion("u2"), **change)
    answer = post(client, sdk, [good, bad])
    assert answer["accepted"] == 1
    assert len(answer["rejected"]) == 1
    assert answer["rejected"][0]["index"] == 1
    assert fragment in answer["rejected"][0]["error"]
    assert count("conversion") == 1


def test_non_finite_values_are_rejected(client, sdk, running, events):
    good = events.conversion("u1")
    body = json.dumps({"events": [good, dict(events.conversion("u2"), value=float("nan"))]})
    assert "NaN" in body
    r = client.post("/v1/events", content=body, headers=sdk | {"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["index"] == 1


def test_exposures_for_unknown_experiments_variants_and_phases_are_rejected(
    client, sdk, running, events, make_experiment, admin, count
):
    make_experiment("still-draft")
    make_experiment("archived-one")
    assert client.post("/v1/experiments/archived-one/archive", headers=admin).status_code == 200
    batch = [
        events.exposure("u1"),
        events.exposure("u2", experiment="no-such-experiment"),
        events.exposure("u3", "blue"),
        events.exposure("u4", phase=2),
        events.exposure("u5", experiment="still-draft"),
        events.exposure("u6", experiment="archived-one"),
        events.exposure("u7", "treatment", phase=1),
    ]
    answer = post(client, sdk, batch)
    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (1, "unknown_experiment"),
        (2, "unknown_variant"),
        (3, "unknown_phase"),
        (4, "not_started"),
        (5, "not_started"),
    ]
    assert "blue" in answer["rejected"][1]["error"]
    assert count("exposure") == 2


def test_body_errors_are_problems(client, sdk):
    r = client.post(
        "/v1/events", content=b"{not json", headers=sdk | {"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "malformed_json"
    for body in ([], {"events": {}}, {"events": [], "more": 1}, {}):
        r = client.post("/v1/events", json=body, headers=sdk)
        assert r.status_code == 422, body
        assert r.json()["code"] == "validation_error"


# ------------------------------------------------------------------------ late and phases


def test_events_for_a_stopped_experiment_are_stored_and_flagged_late(
    client, sdk, admin, running, events, count
):
    assert post(client, sdk, [events.exposure("u1")])["late"] == 0
    assert client.post("/v1/experiments/new-checkout/stop", headers=admin).status_code == 200
    answer = post(client, sdk, [events.exposure("u2"), events.exposure("u3", "treatment")])
    assert answer["accepted"] == 2
    assert answer["late"] == 2
    assert count("exposure", "late = :t", t=True) == 2
    assert count("exposure_unit") == 3


def test_exposures_of_an_ended_phase_are_late_and_kept_apart(
    client, sdk, admin, running, events, engine
):
    r = client.post(
        "/v1/experiments/new-checkout/phases",
        json={
            "variants": [
                {"key": "control", "weight": 0.5, "is_control": True},
                {"key": "green", "weight": 0.5},
            ],
            "reason": "replace treatment",
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    answer = post(
        client,
        sdk,
        [
            events.exposure("u1", "treatment", phase=1),
            events.exposure("u1", "green"),
            events.exposure("u2", "treatment"),  # phase 2 has no `treatment`
        ],
    )
    assert answer["accepted"] == 2
    assert answer["late"] == 1
    assert [r["code"] for r in answer["rejected"]] == ["unknown_variant"]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT phase, variant, late FROM exposure ORDER BY phase")).all()
        units = conn.execute(text("SELECT phase, variant FROM exposure_unit ORDER BY phase")).all()
    assert [(p, v, bool(late)) for p, v, late in rows] == [
        (1, "treatment", True),
        (2, "green", False),
    ]
    assert [tuple(u) for u in units] == [(1, "treatment"), (2, "green")]


# ---------------------------------------------------------------------------- exposure_unit


def unit_row(engine: Any, unit_id: str) -> tuple[str, datetime, bool]:
    from sqlmodel import Session, select

    from service.events.models import ExposureUnit

    with Session(engine) as session:
        row = session.exec(select(ExposureUnit).where(ExposureUnit.unit_id == unit_id)).one()
        return row.variant, row.first_ts, row.multiple


def test_first_exposure_is_the_earliest_even_out_of_order(client, sdk, running, events, engine):
    post(client, sdk, [events.exposure("u1", at=T0 + timedelta(hours=2))])
    post(client, sdk, [events.exposure("u1", at=T0 + timedelta(hours=1))])
    post(client, sdk, [events.exposure("u1", at=T0 + timedelta(hours=3))])
    assert unit_row(engine, "u1") == ("control", T0 + timedelta(hours=1), False)


def test_a_unit_that_saw_two_variants_is_flagged_multiple(client, sdk, running, events, engine):
    post(client, sdk, [events.exposure("u1", "treatment", at=T0 + timedelta(minutes=5))])
    post(client, sdk, [events.exposure("u1", "control", at=T0)])
    assert unit_row(engine, "u1") == ("control", T0, True)
    # Inside one batch too, whatever the order.
    post(
        client,
        sdk,
        [
            events.exposure("u2", "control", at=T0 + timedelta(seconds=9)),
            events.exposure("u2", "treatment", at=T0 + timedelta(seconds=3)),
            events.exposure("u2", "control", at=T0 + timedelta(seconds=1)),
        ],
    )
    assert unit_row(engine, "u2") == ("control", T0 + timedelta(seconds=1), True)


def test_duplicates_and_conflicts_do_not_touch_first_exposures(
    client, sdk, running, events, engine
):
    e = events.exposure("u1", "treatment", at=T0 + timedelta(hours=1))
    post(client, sdk, [e])
    answer = post(client, sdk, [e, dict(e, variant="control", timestamp="2026-03-01T00:00:00Z")])
    assert (answer["duplicates"], answer["conflicts"]) == (1, 1)
    assert unit_row(engine, "u1") == ("treatment", T0 + timedelta(hours=1), False)


def test_timestamps_round_trip_as_aware_utc(client, sdk, running, events, engine):
    from sqlmodel import Session, select

    from service.events.models import Conversion

    post(
        client,
        sdk,
        [events.conversion("u1", value=2.5, timestamp="2026-03-02T11:30:00.123456+02:00")],
    )
    with Session(engine) as session:
        row = session.exec(select(Conversion)).one()
    assert row.ts == datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
    assert row.ts.tzinfo is not None
    assert row.value == 2.5
    assert row.received_at.tzinfo is not None


# ------------------------------------------------------------------------------------ limits


def test_more_than_ten_thousand_events_is_413(client, sdk, running, events):
    one = events.conversion("u1")
    r = client.post("/v1/events", json={"events": [one] * 10_001}, headers=sdk)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "too_many_events"


def test_ten_thousand_events_are_accepted(client, sdk, running, events, count):
    answer = post(client, sdk, events.mixed(10_000))
    assert answer["accepted"] == 10_000
    assert count("exposure") + count("conversion") == 10_000


def test_a_body_over_five_mebibytes_is_413(client, sdk, running):
    body = b'{"events": [' + b" " * (5 * 1024 * 1024) + b"]}"
    r = client.post("/v1/events", content=body, headers=sdk | {"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"


def test_load_is_shed_with_429_and_retry_after(client, sdk, running, events, monkeypatch):
    from service.events import service

    monkeypatch.setattr(service, "_gate", service.IngestGate(1))
    with service.gate():  # the only slot is taken
        r = client.post("/v1/events", json={"events": [events.conversion("u1")]}, headers=sdk)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.headers["content-type"] == "application/problem+json"
    r = client.post("/v1/events", json={"events": [events.conversion("u1")]}, headers=sdk)
    assert r.status_code == 200


# ------------------------------------------------------------------------------------- roles


def test_only_sdk_and_admin_keys_send_events(client, keys, running, events):
    body = {"events": [events.conversion("u1")]}
    assert client.post("/v1/events", json=body).status_code == 401
    assert (
        client.post("/v1/events", json=body, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    for role in ("editor", "viewer"):
        r = client.post("/v1/events", json=body, headers=keys[role])
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
    assert client.post("/v1/events", json=body, headers=keys["admin"]).status_code == 200


def test_the_openapi_document_describes_the_event_body(client):
    op = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["events"]["maxItems"] == 10_000
    assert {"200", "413", "429"} <= set(op["responses"])
    assert "$defs" not in json.dumps(schema)


# ------------------------------------------------------------------------------- in-process


def test_ingest_in_process_commits_and_reports_indexes(engine, running, count):
    from service.db import open_session
    from service.events.models import ConversionIn, ExposureIn
    from service.events.service import ingest

    batch = [
        ExposureIn(
            event_id="e-1",
            type="exposure",
            experiment="new-checkout",
            variant="control",
            unit_id="u1",
            timestamp=T0,
        ),
        ExposureIn(
            event_id="e-2",
            type="exposure",
            experiment="new-checkout",
            variant="purple",
            unit_id="u1",
            timestamp=T0,
        ),
        ConversionIn(event_id="c-1", type="conversion", name="buy", unit_id="u1", timestamp=T0),
    ]
    session = open_session(write=True)
    try:
        result = ingest(session, batch)
    finally:
        session.close()
    assert (result.accepted, result.duplicates, result.conflicts) == (2, 0, 0)
    assert [(r.index, r.code) for r in result.rejected] == [(1, "unknown_variant")]
    assert count("exposure") == 1 and count("conversion") == 1
