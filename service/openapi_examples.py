"""Request-body examples published in the OpenAPI file, one valid body per operation that needs one.

A client reading `openapi/openapi.json` sees a body the server accepts; schemathesis' examples phase
sends them, which is how the fuzzer gets past the cross-field rules of §2 (weights summing to 1, one
control, metrics that exist) that JSON Schema cannot express. The metric keys named here are the
README's (`purchase`, `errors`); `.ci/fuzz_seed.py` creates them.
"""

from __future__ import annotations

from typing import Any

_HYPOTHESIS = {
    "change": "merge the three checkout steps",
    "population": "web buyers",
    "expected_outcome": "+10% purchases",
    "rationale": "drop-off at step 2",
}
_VARIANTS = [
    {"key": "control", "weight": 0.5, "is_control": True},
    {"key": "one-page", "weight": 0.5},
]

# (method, path) -> {example name: {"summary": ..., "value": body}}
REQUEST_EXAMPLES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("post", "/v1/metrics"): {
        "binomial": {
            "summary": "Did the unit purchase?",
            "value": {
                "key": "checkout-purchase",
                "name": "Purchase",
                "type": "binomial",
                "event": "purchase",
            },
        },
    },
    ("post", "/v1/experiments"): {
        "checkout": {
            "summary": "A two-arm test with a guardrail",
            "value": {
                "key": "one-page-checkout-example",
                "title": "One-page checkout",
                "owner": "alice@example.com",
                "hypothesis": _HYPOTHESIS,
                "variants": _VARIANTS,
                "primary_metric": {"metric": "purchase", "mde": 0.1},
                "guardrails": [{"metric": "errors", "margin": 0.02}],
                "baseline": {"rate": 0.1},
                "expected_daily_units": 4000,
            },
        },
    },
    ("post", "/v1/experiments/{key}/phases"): {
        "reweight": {
            "summary": "New weights start a new phase",
            "value": {
                "variants": [
                    {"key": "control", "weight": 0.4, "is_control": True},
                    {"key": "treatment", "weight": 0.6},
                ],
                "reason": "ramp the treatment",
            },
        },
    },
    ("post", "/v1/experiments/{key}/conclude"): {
        "inconclusive": {
            "summary": "Record the decision",
            "value": {"decision": "inconclusive", "rationale": "No effect large enough to matter."},
        },
    },
    ("post", "/v1/templates"): {
        "standard": {
            "summary": "An organisation's standard",
            "value": {
                "key": "standard-example",
                "name": "Standard",
                "defaults": {"alpha": 0.05, "power": 0.8},
                "rules": {"minimum_duration_days": 7, "require_structured_hypothesis": True},
            },
        },
    },
    ("patch", "/v1/experiments/{key}"): {
        "title": {
            "summary": "Rename a draft (a running experiment takes only its traffic fields)",
            "value": {"title": "Checkout on one page"},
        },
    },
    ("post", "/v1/experiments/{key}/notes"): {
        "note": {
            "summary": "A note on the record",
            "value": {"text": "Paid campaign paused on Tuesday: expect fewer new users."},
        },
    },
    ("post", "/v1/experiments/{key}/share"): {
        "board": {
            "summary": "A read-only link for the review board, for three days",
            "value": {"note": "review board", "expires_in_hours": 72},
        },
    },
    ("post", "/v1/data-sources"): {
        "duckdb": {
            "summary": "A DuckDB file with the organisation's own column names",
            "value": {
                "key": "warehouse-example",
                "engine": "duckdb",
                "connection": {"path": "/srv/warehouse.duckdb"},
                "exposures": {
                    "table": "exposures",
                    "columns": {
                        "unit_id": "user_id",
                        "experiment": "test",
                        "variant": "arm",
                        "timestamp": "seen_at",
                    },
                },
                "events": {
                    "sql": "SELECT * FROM orders WHERE amount > 0",
                    "columns": {
                        "unit_id": "user_id",
                        "name": "kind",
                        "value": "amount",
                        "timestamp": "ordered_at",
                    },
                },
            },
        },
    },
    ("post", "/ofrep/v1/evaluate/flags/{key}"): {
        "unit": {
            "summary": "The variant of one unit",
            "value": {"context": {"targetingKey": "user-42", "country": "FR"}},
        },
    },
    ("post", "/ofrep/v1/evaluate/flags"): {
        "unit": {
            "summary": "Every experiment for one unit",
            "value": {"context": {"targetingKey": "user-42", "country": "FR"}},
        },
    },
}


def add_request_examples(schema: dict[str, Any]) -> None:
    """Attach REQUEST_EXAMPLES to the JSON request bodies of an OpenAPI document, in place."""
    for (method, path), examples in REQUEST_EXAMPLES.items():
        body = schema["paths"][path][method]["requestBody"]
        body["content"]["application/json"]["examples"] = examples
