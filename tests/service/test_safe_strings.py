"""Issue 12: NUL and other control characters are refused in every string of every request body,
path and query parameter, with a 422 naming the field, on SQLite and PostgreSQL alike (a NUL was
a 500 on PostgreSQL and stored on SQLite)."""

from typing import Any

import pytest

from service.text import control_character_problem


def _errors(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return {e["field"]: e["message"] for e in r.json()["errors"]}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "New\x00checkout"),
        ("owner", "pm\x00@example.com"),
        ("hypothesis", "Faster\x00checkout"),
        ("title", "tab\tin a title"),
        ("owner", "line\nbreak"),
        ("title", "delete\x7f"),
        ("title", "c1\x85control"),
    ],
)
def test_experiment_strings_with_control_characters_are_refused(
    client, admin, bodies, make_metric, field, value
):
    make_metric("conversion")
    r = client.post("/v1/experiments", json=bodies.experiment(**{field: value}), headers=admin)
    errors = _errors(r)
    assert field in errors, errors
    assert "remove it" in errors[field]
    assert "\x00" not in r.text  # the bad bytes are never echoed back
    assert client.get("/v1/experiments", headers=admin).json()["total"] == 0


def test_multi_line_prose_keeps_its_line_breaks_but_not_a_nul(client, admin, bodies, make_metric):
    make_metric("conversion")
    hypothesis = {
        "change": "One-page checkout.\nNo address step.",
        "population": "All buyers",
        "expected_outcome": "More purchases",
        "rationale": "Drop-off at step 2:\n\t40 %",
    }
    r = client.post(
        "/v1/experiments",
        json=bodies.experiment(hypothesis=hypothesis, description="line one\r\nline two"),
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["hypothesis"] == hypothesis
    r = client.post("/v1/experiments/new-checkout/notes", json={"text": "a\n\tb"}, headers=admin)
    assert r.status_code == 200, r.text
    r = client.post("/v1/experiments/new-checkout/notes", json={"text": "a\x00b"}, headers=admin)
    assert "text" in _errors(r)
    r = client.patch(
        "/v1/experiments/new-checkout",
        json={"hypothesis": hypothesis | {"rationale": "nul\x00"}},
        headers=admin,
    )
    assert "hypothesis.rationale" in _errors(r)


def test_nested_keys_and_free_form_json_are_checked_too(client, admin, bodies, make_metric):
    make_metric("conversion")
    r = client.post(
        "/v1/experiments",
        json=bodies.experiment(
            overrides={"user\x00": "control"},
            targeting={"attribute": "country", "op": "eq", "value": "F\x00R"},
            tags=["ok", "bad\x01tag"],
        ),
        headers=admin,
    )
    errors = _errors(r)
    assert "overrides" in errors and "key" in errors["overrides"]
    assert "targeting.value" in errors
    assert "tags.1" in errors


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/keys", {"name": "ci\x00", "role": "sdk"}, "name"),
        (
            "/v1/metrics",
            {"key": "conv", "name": "Conv\x00", "type": "binomial", "event": "buy"},
            "name",
        ),
        ("/v1/templates", {"key": "tpl", "name": "Standard\x00"}, "name"),
        ("/v1/layers", {"key": "lay", "description": "d\x00"}, "description"),
        (
            "/v1/webhooks",
            {
                "url": "https://example.com/hook",
                "event_types": ["alert.srm"],
                "description": "x\x00",
            },
            "description",
        ),
    ],
)
def test_every_request_model_refuses_a_nul(client, admin, path, body, field):
    assert field in _errors(client.post(path, json=body, headers=admin))


def test_the_other_field_errors_come_in_the_same_422(client, admin, bodies, make_metric):
    make_metric("conversion")
    r = client.post(
        "/v1/experiments",
        json=bodies.experiment(title="a\x00", alpha=0.9),
        headers=admin,
    )
    assert {"title", "alpha"} <= set(_errors(r))


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/experiments/exp%00a", "key"),
        ("PATCH", "/v1/experiments/exp%00a", "key"),
        ("GET", "/v1/experiments/exp%00a/results", "key"),
        ("GET", "/v1/experiments/exp%00a/audit", "key"),
        ("POST", "/v1/experiments/exp%00a/notes", "key"),
        ("GET", "/v1/metrics/conv%00", "key"),
        ("GET", "/v1/layers/lay%01er", "key"),
        ("GET", "/v1/experiments?owner=%00", "owner"),
        ("GET", "/v1/alerts?experiment=a%00b", "experiment"),
    ],
)
def test_path_and_query_parameters_with_control_characters_are_a_422(
    client, admin, method, path, field
):
    body = {"text": "a note"} if path.endswith("/notes") else {} if method == "PATCH" else None
    r = client.request(method, path, json=body, headers=admin)
    assert field in _errors(r)


@pytest.mark.parametrize(
    ("value", "multiline", "bad"),
    [
        ("plain text, é ü 中文 🙂", False, False),
        ("a\tb", False, True),
        ("a\tb\nc\r\n", True, False),
        ("a\x00b", True, True),
        ("\x1b[31mred", True, True),
        ("\u2028line separator is printable", False, False),
    ],
)
def test_control_character_problem_allows_printable_unicode(value, multiline, bad):
    assert (control_character_problem(value, multiline=multiline) is not None) is bad
