"""Request bodies that used to crash or fool the parser (issue 12, product.md §5).

- JSON nested deeper than 32 is a 400 on ``/v1/events`` and on both OFREP endpoints (it was a
  500 ``RecursionError`` at about 1,000 levels), and the connection stays usable.
- ``/v1/events`` takes ``application/json`` only (415 otherwise) and refuses a key repeated in an
  object (``"type": "exposure", "type": "conversion"`` was stored as a conversion).
- Malformed JSON names ``body`` as the field, with the line and column (not ``"8"``).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from service.events import service

JSON = {"content-type": "application/json"}
OFREP_SINGLE = "/ofrep/v1/evaluate/flags/known-flag"
OFREP_BULK = "/ofrep/v1/evaluate/flags"


def nested(depth: int) -> str:
    """A JSON value of ``depth`` levels of arrays: ``[[...]]``."""
    return "[" * depth + "]" * depth


def events_body(depth: int) -> bytes:
    """``{"events": [ <value> ]}`` whose innermost array is at level ``depth`` in all."""
    return ('{"events": [' + nested(depth - 2) + "]}").encode()


def ofrep_body(depth: int) -> bytes:
    """``{"context": {"targetingKey": "u", "deep": <value>}}``, ``depth`` levels in all."""
    return ('{"context": {"targetingKey": "u", "deep": ' + nested(depth - 2) + "}}").encode()


def assert_body_problem(r: Any, code: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = dict(r.json())
    assert problem["code"] == code
    assert [e["field"] for e in problem["errors"]] == ["body"]
    return problem


# ------------------------------------------------------------------------------------ depth


@pytest.mark.parametrize("depth", [33, 200, 1_000, 100_000])
def test_events_refuse_json_nested_deeper_than_32(client, sdk, running, count, depth):
    r = client.post("/v1/events", content=events_body(depth), headers=sdk | JSON)
    problem = assert_body_problem(r, "json_too_deep")
    assert "32" in problem["errors"][0]["message"]
    assert count("exposure") + count("conversion") == 0


def test_events_nested_32_deep_are_judged_event_by_event(client, sdk, running, events, count):
    body = json.dumps({"events": [events.exposure("u1"), "x"]})
    body = body.replace('"x"', nested(30))  # the array in an event, at level 32 in all
    r = client.post("/v1/events", content=body, headers=sdk | JSON)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert [x["index"] for x in r.json()["rejected"]] == [1]


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
@pytest.mark.parametrize("path", [OFREP_SINGLE, OFREP_BULK])
def test_ofrep_refuses_json_nested_deeper_than_32(client, sdk, make_experiment, path, depth):
    make_experiment("known-flag", start=True)
    r = client.post(path, content=ofrep_body(depth), headers=sdk | JSON)
    assert r.status_code == 400, r.text
    assert r.json()["errorCode"] == "PARSE_ERROR"
    assert "32" in r.json()["errorDetails"]
    assert client.post(path, content=ofrep_body(32), headers=sdk | JSON).status_code == 200


def test_a_deep_body_leaves_the_keep_alive_connection_usable(server, sdk, running, events):
    """Over real HTTP: the 400 is answered on the connection, which then serves the next request
    (the RecursionError could reset it)."""
    srv = server(1)
    srv.start()
    host, port = srv.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        headers = sdk | JSON
        paths = [("/v1/events", events_body(50_000)), (OFREP_BULK, ofrep_body(50_000))]
        for path, deep in paths:
            conn.request("POST", path, body=deep, headers=headers)
            first = conn.getresponse()
            assert first.status == 400, first.read()
            assert first.getheader("connection", "").lower() != "close"
            first.read()
            sock = conn.sock
            assert sock is not None
            good = json.dumps({"events": [events.exposure("u1")]}).encode()
            conn.request("POST", "/v1/events", body=good, headers=headers)
            second = conn.getresponse()
            assert second.status == 200
            assert json.loads(second.read())["rejected"] == []
            assert conn.sock is sock  # the same TCP connection answered both
    finally:
        conn.close()


# ------------------------------------------------------------------------ content type


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_events_refuse_a_body_that_is_not_sent_as_json(
    client, sdk, running, events, count, content_type
):
    body = json.dumps({"events": [events.exposure("u1")]}).encode()
    headers = dict(sdk) | ({"content-type": content_type} if content_type else {})
    r = client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unsupported_media_type"
    assert "application/json" in r.json()["detail"]
    assert count("exposure") == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_events_accept_json_with_parameters(client, sdk, running, events, content_type):
    body = json.dumps({"events": [events.exposure("u1")]}).encode()
    r = client.post("/v1/events", content=body, headers=sdk | {"content-type": content_type})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1


# ---------------------------------------------------------------------- repeated keys


def repeat(body: str, key: str, first: str, then: str) -> str:
    """``body`` with ``"key": first`` sent as ``"key": first, "key": then``."""
    old = f'"{key}": {first}'
    assert old in body
    return body.replace(old, f"{old}, " + f'"{key}": {then}', 1)


def exposure_and_conversion(events: Any) -> str:
    return json.dumps({"events": [events.exposure("u1"), events.conversion("u:2")]})


@pytest.mark.parametrize(
    "smuggle",
    [
        lambda b: repeat(b, "type", '"exposure"', '"conversion"'),
        lambda b: repeat(b, "unit_id", '"u1"', '"u3"'),
        lambda b: repeat(b, "unit_id", '"u:2"', '"u:9"'),  # colons in values: the exact count
        lambda b: b.replace('"events": [', '"events": [], "events": [', 1),
        lambda b: repeat(b, "variant", '"control"', '"control"'),  # the same value twice too
    ],
)
def test_events_refuse_a_key_repeated_in_an_object(client, sdk, running, events, count, smuggle):
    body = smuggle(exposure_and_conversion(events))
    r = client.post("/v1/events", content=body, headers=sdk | JSON)
    problem = assert_body_problem(r, "duplicate_key")
    assert "twice" in problem["errors"][0]["message"]
    assert count("exposure") + count("conversion") == 0


def test_the_colon_count_proves_no_repeat_in_ordinary_batches(events):
    """The fast path's check accepts every batch without repeats, colons in values included."""
    batches = [
        [events.exposure("u1"), events.conversion("u2")],
        [events.exposure("a:b:c", timestamp="2026-03-02T11:00:00.5+02:00")],
        [events.conversion("x", name='n":"m', value=3)],
        [events.exposure(":", variant="treatment", phase=1)],
    ]
    for batch in batches:
        for text in (json.dumps({"events": batch}), json.dumps({"events": batch}, indent=2)):
            parsed = service.parse_batch(text.encode())
            assert parsed.indexes is None and parsed.rejected == [], text
    escaped = json.dumps({"events": [events.conversion("a\\u003ab")]}).replace("\\\\", "\\")
    parsed = service.parse_batch(escaped.encode())  # an escaped colon: decided by the slow path
    assert parsed.rejected == [] and parsed.events[0]["unit_id"] == "a:b"


# --------------------------------------------------------------------- malformed JSON


def test_malformed_events_json_names_the_body_with_line_and_column(client, sdk, running):
    body = b'{"events": [\n  {"event_id": "e1",\n   oops}\n]}'
    r = client.post("/v1/events", content=body, headers=sdk | JSON)
    problem = assert_body_problem(r, "malformed_json")
    assert "line 3, column 4" in problem["errors"][0]["message"]


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/v1/metrics", "admin"),
        ("/v1/experiments", "admin"),
        ("/v1/keys", "admin"),
        ("/v1/webhooks", "admin"),
        ("/v1/assign", "sdk"),
    ],
)
def test_malformed_json_anywhere_names_the_body_with_line_and_column(client, keys, path, role):
    body = b'{"key": "abc",\n "name": }'
    r = client.post(path, content=body, headers=keys[role] | JSON)
    problem = assert_body_problem(r, "malformed_json")
    (error,) = problem["errors"]
    assert "line 2, column 10" in error["message"], error
    assert "line 2, column 10" in problem["detail"]


def test_malformed_ofrep_json_gives_line_and_column(client, sdk, make_experiment):
    make_experiment("known-flag", start=True)
    for path in (OFREP_SINGLE, OFREP_BULK):
        r = client.post(path, content=b'{"context":\n {"targetingKey": "u",}}', headers=sdk | JSON)
        assert r.status_code == 400
        assert r.json()["errorCode"] == "PARSE_ERROR"
        assert "line 2, column 23" in r.json()["errorDetails"]
        r = client.post(
            path, content=b'{"context": {"targetingKey": "u", "targetingKey": "v"}}', headers=sdk
        )
        assert r.status_code == 400 and "twice" in r.json()["errorDetails"]
