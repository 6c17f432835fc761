"""product.md §5 bounds on stored events: value, timestamp, strings without control characters.

Each refused event is rejected on its own, with its index and a code, and never fails its batch:
the good events beside it are stored, on SQLite and on PostgreSQL alike (a NUL byte used to fail
the whole batch on PostgreSQL, ``text fields cannot contain NUL``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.events import service
from service.events.models import event_adapter
from service.events.parse import _error_code
from service.events.prepare import prepare

JSON = {"content-type": "application/json"}


def post(client: Any, sdk: dict[str, str], events: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post("/v1/events", json={"events": events}, headers=sdk)
    assert r.status_code == 200, r.text
    return dict(r.json())


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------- value


@pytest.mark.parametrize("value", [1.5e154, 1e200, 1e308, -1e308, 1.000001e12, -2e12, 10**13])
def test_events_refuse_a_value_above_1e12(client, sdk, running, events, count, value):
    good = events.conversion("u1", value=12.5)
    bad = events.conversion("u2", value=value)
    answer = post(client, sdk, [good, bad, events.exposure("u1")])
    assert answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [(1, "value_out_of_range")]
    assert "value" in answer["rejected"][0]["error"]
    assert count("conversion") == 1
    assert count("conversion", "ABS(value) > 1e12") == 0


@pytest.mark.parametrize("value", [1e12, -1e12, 0, 999_999_999_999.5])
def test_events_accept_values_up_to_1e12(client, sdk, running, events, count, value):
    answer = post(client, sdk, [events.conversion("u1", value=value)])
    assert answer["accepted"] == 1, answer


@pytest.mark.parametrize("literal", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_events_refuse_non_finite_values_as_out_of_range(client, sdk, running, events, literal):
    good, bad = events.conversion("u1"), events.conversion("u2", value=7.0)
    body = json.dumps({"events": [good, bad]}).replace("7.0", literal)
    r = client.post("/v1/events", content=body, headers=sdk | JSON)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(1, "value_out_of_range")]


# ------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1999-12-31T23:59:59.999999Z",
        "2000-01-01T00:30:00+01:00",  # 1999-12-31T23:30Z
        "0001-01-01T00:30:00+01:00",  # before year 1 once in UTC
        "1970-01-01T00:00:00Z",
    ],
)
def test_events_refuse_timestamps_before_2000(client, sdk, running, events, count, stamp):
    answer = post(
        client,
        sdk,
        [
            events.exposure("u1", timestamp=stamp),
            events.conversion("u2", timestamp=stamp),
            events.exposure("u3"),
        ],
    )
    assert answer["accepted"] == 1
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (0, "timestamp_out_of_range"),
        (1, "timestamp_out_of_range"),
    ]
    assert count("exposure") == 1 and count("conversion") == 0


def test_events_refuse_timestamps_more_than_a_day_ahead_of_the_server(
    client, sdk, running, events, count
):
    now = datetime.now(UTC)
    ahead = now + timedelta(hours=25)
    offset = (now + timedelta(hours=26)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+01:00")
    fine = now + timedelta(hours=23)
    answer = post(
        client,
        sdk,
        [
            events.exposure("u1", at=ahead),
            events.conversion("u1", timestamp=offset),
            events.exposure("u2", at=fine),
            events.conversion("u2", at=datetime(2000, 1, 1, tzinfo=UTC)),
        ],
    )
    assert answer["accepted"] == 2, answer
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (0, "timestamp_out_of_range"),
        (1, "timestamp_out_of_range"),
    ]
    assert "24 hours" in answer["rejected"][0]["error"]


# -------------------------------------------------------------------- control characters


CONTROL = ["\x00", "\x01", "\n", "\x1f", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("exposure", "unit_id"),
        ("exposure", "experiment"),
        ("exposure", "variant"),
        ("exposure", "event_id"),
        ("conversion", "unit_id"),
        ("conversion", "name"),
        ("conversion", "event_id"),
    ],
)
def test_a_control_character_in_any_string_rejects_that_event_only(
    client, sdk, running, events, count, stored_ids, char, kind, field
):
    """A NUL used to fail the whole batch on PostgreSQL and be stored on SQLite."""
    make = events.exposure if kind == "exposure" else events.conversion
    bad = make("u-bad")
    bad[field] = f"a{char}b"
    good = [events.exposure("u1"), events.conversion("u1")]
    answer = post(client, sdk, [good[0], bad, good[1]])
    assert answer["accepted"] == 2, answer
    assert len(answer["rejected"]) == 1
    rejected = answer["rejected"][0]
    assert (rejected["index"], rejected["code"]) == (1, "invalid")
    assert rejected["error"].startswith(f"{field}: ")
    assert sorted(stored_ids()) == sorted(e["event_id"] for e in good)


def test_a_lone_surrogate_rejects_that_event_only(client, sdk, running, events, count):
    bad = events.conversion("u-bad")
    body = json.dumps({"events": [events.conversion("u1"), bad]}).replace("u-bad", "\\ud800")
    r = client.post("/v1/events", content=body, headers=sdk | JSON)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(1, "invalid")]
    assert r.json()["rejected"][0]["error"].startswith("unit_id: ")
    assert count("conversion") == 1


def test_printable_unicode_is_stored_as_sent(client, sdk, running, events, engine):
    from sqlalchemy import text

    unit = "ユーザー é 🎉 tab-free"
    answer = post(client, sdk, [events.conversion(unit, name="achat réussi")])
    assert answer["accepted"] == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT unit_id, name FROM conversion")).one() == (
            unit,
            "achat réussi",
        )


# -------------------------------------------------------------- both paths agree on bounds


BOUND_CASES = [
    {"value": 1e12},
    {"value": -1e12},
    {"value": 1.0000000001e12},
    {"value": -1.5e154},
    {"value": 10**13},
    {"value": 10**400},
    {"timestamp": "1999-12-31T23:59:59.999999Z"},
    {"timestamp": "2000-01-01T00:00:00Z"},
    {"timestamp": "2000-01-01T00:00:00.000001+00:00"},
    {"timestamp": "2000-01-01T00:59:59+01:00"},
    {"timestamp": "2000-01-01T01:00:00+01:00"},
    {"timestamp": "9999-12-31T23:59:59Z"},
    {"unit_id": "a\x00"},
    {"unit_id": "a\x85"},
    {"unit_id": "a\u00a0b"},  # a no-break space is printable: accepted
    {"name": "\x7f"},
    {"name": "a\u2028b"},  # a line separator is not a control character (Zl): accepted
    {"event_id": "a\x00"},
]


@pytest.mark.parametrize("change", BOUND_CASES, ids=repr)
def test_both_validation_paths_apply_the_same_bounds(change):
    """The one-pass validator (with ``_prepare``'s timestamp range) and the models refuse the
    same events, with the same code."""
    event = {
        "event_id": "c-1",
        "type": "conversion",
        "name": "purchase",
        "unit_id": "u1",
        "value": 2.5,
        "timestamp": "2026-03-02T09:00:00Z",
    } | change
    body = json.dumps({"events": [event]}).encode()
    parsed = service.parse_batch(body)
    items, rejected = prepare(parsed.events, parsed.indexes, sqlite=True)
    by_pipeline = [r.code for r in parsed.rejected + rejected]
    try:
        event_adapter.validate_python(json.loads(body)["events"][0])
    except Exception as exc:  # ValidationError
        by_models = [_error_code(exc)]  # type: ignore[arg-type]
    else:
        by_models = []
    assert by_pipeline == by_models
    assert len(items) == (0 if by_models else 1)


@pytest.mark.parametrize("char", ["\x00", "\x85", "\x9f"])
def test_a_control_character_in_an_attribute_value_rejects_that_event_only(
    client, sdk, running, events, count, char
):
    bad = events.exposure("u-bad", attributes={"country": f"F{char}R"})
    answer = post(client, sdk, [events.exposure("u1", attributes={"country": "FR"}), bad])
    assert answer["accepted"] == 1, answer
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [(1, "invalid")]
    assert "attributes" in answer["rejected"][0]["error"]
    assert count("exposure") == 1
