"""Seed a live Trialbook server so that schemathesis reaches every operation.

Usage: fuzz_seed.py BASE_URL ADMIN_KEY OUT_DIR

Without seeds every `/v1/experiments/{key}/…`, `/v1/webhooks/{webhook_id}`, `/v1/keys/{key_id}` and
`/v1/alerts/{alert_id}` operation answers 404 to whatever schemathesis invents. This script creates,
through the public API only, one of each thing in each state (experiments draft, running, paused,
stopped, concluded; metrics of every type; a layer, a template, webhooks, spare keys to revoke, an
open alert), then writes into OUT_DIR:

- `seeds.toml`: schemathesis dictionaries of the ids and keys created, bound to the path parameters
  (drawn most of the time, so invented values still test the 404s), and the webhook `url` bound to a
  closed port on 127.0.0.1 so that no fuzzed URL sends traffic anywhere;
- `keys.env`: one API key per role (`FUZZ_KEY_ADMIN`, `FUZZ_KEY_EDITOR`, `FUZZ_KEY_VIEWER`,
  `FUZZ_KEY_SDK`) for the per-role runs.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

# Nothing listens on the discard port; deliveries fail at once and stay on this machine.
CLOSED_RECEIVER = "http://127.0.0.1:9/fuzz-hook"
SPARE_KEYS = 12  # revoked one by one by `DELETE /v1/keys/{key_id}` during the runs


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 300:
        raise SystemExit(
            f"seed step failed: {r.request.method} {r.request.url} -> {r.status_code} {r.text}"
        )
    return r.json() if r.content else None


def _experiment(key: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "title": f"Fuzz seed {key}",
        "owner": "fuzz@example.com",
        "hypothesis": {
            "change": "a seeded change",
            "population": "everyone",
            "expected_outcome": "+10% conversions",
            "rationale": "seed for the fuzzer",
        },
        "variants": [
            {"key": "control", "weight": 0.5, "is_control": True},
            {"key": "treatment", "weight": 0.5},
        ],
        "primary_metric": {"metric": "fz-conv", "mde": 0.1},
        "secondary_metrics": ["fz-revenue", "fz-ratio"],
        "guardrails": [{"metric": "fz-errors", "margin": 0.05}],
        "baseline": {"rate": 0.1},
        "expected_daily_units": 1000,
        "analysis": {"bayesian": True},
    }
    body.update(extra)
    return body


def _events(experiment: str, units: int, skew: bool = False) -> list[dict[str, Any]]:
    """Exposures and conversions; with `skew` 4 of 5 units see the control (an SRM, so an alert)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    out: list[dict[str, Any]] = []
    for i in range(units):
        unit = f"{experiment}-u{i}"
        variant = "control" if (i % 5 != 0 if skew else i % 2 == 0) else "treatment"
        ts = (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        out.append(
            {
                "event_id": str(uuid.uuid4()),
                "type": "exposure",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
                "timestamp": ts,
            }
        )
        if i % 3 == 0:
            for name, value in (("fz-conv", 1), ("fz-revenue", 10.0 + i % 7), ("fz-den", 2.0)):
                out.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "type": "conversion",
                        "name": name,
                        "unit_id": unit,
                        "value": value,
                        "timestamp": ts,
                    }
                )
    return out


def _warehouse(path: Path) -> None:
    """An empty DuckDB warehouse at ``path`` with the tables the seeded sources map."""
    import duckdb  # the dev extra installs it (.ci/warehouse.sh checks)

    con = duckdb.connect(str(path))
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS exposures "
            "(user_id VARCHAR, test VARCHAR, arm VARCHAR, seen_at TIMESTAMPTZ)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS orders "
            "(user_id VARCHAR, kind VARCHAR, amount DOUBLE, ordered_at TIMESTAMPTZ)"
        )
    finally:
        con.close()


def _source(key: str, path: Path) -> dict[str, Any]:
    """The OpenAPI example of a DuckDB data source, as ``key`` over the warehouse file ``path``
    (see :func:`_warehouse`: its tables are the ones the example maps)."""
    from service.openapi_examples import REQUEST_EXAMPLES

    example = REQUEST_EXAMPLES[("post", "/v1/data-sources")]["duckdb"]["value"]
    return {**example, "key": key, "connection": {"path": str(path)}}


def seed(base: str, admin_key: str, out_dir: Path) -> None:
    def client(key: str) -> httpx.Client:
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    admin = client(admin_key)
    keys: dict[str, str] = {"admin": admin_key}
    for role in ("editor", "viewer", "sdk"):
        keys[role] = _ok(admin.post("/v1/keys", json={"name": f"fuzz-{role}", "role": role}))["key"]
    spare_ids = [
        _ok(admin.post("/v1/keys", json={"name": f"fuzz-spare-{i}", "role": "viewer"}))["id"]
        for i in range(SPARE_KEYS)
    ]
    sdk = client(keys["sdk"])

    metrics = [
        {"key": "fz-conv", "name": "Conversion", "type": "binomial", "event": "fz-conv"},
        {
            "key": "fz-errors",
            "name": "Errors",
            "type": "binomial",
            "event": "fz-error",
            "higher_is_better": False,
        },
        {
            "key": "fz-revenue",
            "name": "Revenue",
            "type": "mean",
            "event": "fz-revenue",
            "winsorize_upper": 0.99,
        },
        {
            "key": "fz-ratio",
            "name": "Revenue per visit",
            "type": "ratio",
            "numerator_event": "fz-revenue",
            "denominator_event": "fz-den",
        },
    ]
    # the metrics that the request examples of the OpenAPI file name (service/openapi_examples.py)
    metrics += [
        {"key": "purchase", "name": "Purchase", "type": "binomial", "event": "purchase"},
        {"key": "errors", "name": "Errors", "type": "binomial", "event": "error"},
    ]
    for m in metrics:
        _ok(admin.post("/v1/metrics", json=m))
    _ok(admin.post("/v1/layers", json={"key": "fz-layer", "description": "Fuzz layer"}))
    _ok(admin.post("/v1/templates", json={"key": "fz-template", "name": "Fuzz template"}))
    approval = {
        "key": "fz-approval",
        "name": "Approval first",
        "rules": {"approval_required": True},
    }
    _ok(admin.post("/v1/templates", json=approval))

    # Several of each state: transitions consume them (a started draft is no longer a draft).
    states: dict[str, list[str]] = {}
    for i in range(8):
        states[f"fz-draft-{i}"] = []
    for i in range(6):
        states[f"fz-running-{i}"] = ["start"]
    for i in range(4):
        states[f"fz-paused-{i}"] = ["start", "pause"]
        states[f"fz-stopped-{i}"] = ["start", "stop"]
    for i in range(2):
        states[f"fz-concluded-{i}"] = ["start", "stop", "conclude"]
    for key, steps in states.items():
        _ok(admin.post("/v1/experiments", json=_experiment(key)))
        for step in steps:
            if step == "stop":
                # events before the stop (after it they would be flagged late); running-0 has an SRM
                events = _events(key, 400, skew=key == "fz-running-0")
                _ok(sdk.post("/v1/events", json={"events": events}))
            body = (
                {"decision": "inconclusive", "rationale": "seeded"} if step == "conclude" else None
            )
            _ok(admin.post(f"/v1/experiments/{key}/{step}", json=body))
        if steps and "stop" not in steps:
            events = _events(key, 400, skew=key == "fz-running-0")
            _ok(sdk.post("/v1/events", json={"events": events}))
    _ok(admin.post("/v1/experiments", json=_experiment("fz-layered", layer="fz-layer")))
    _ok(admin.post("/v1/experiments/fz-layered/start"))
    # drafts under the approval template, registered by the editor: the admin may approve them
    editor = client(keys["editor"])
    to_approve = [f"fz-approve-{i}" for i in range(6)]
    for key in to_approve:
        _ok(editor.post("/v1/experiments", json=_experiment(key, template="fz-approval")))

    hooks = [
        _ok(
            admin.post(
                "/v1/webhooks",
                json={
                    "url": CLOSED_RECEIVER,
                    "event_types": ["experiment.started", "alert.srm"],
                    "description": f"fuzz {i}",
                },
            )
        )["id"]
        for i in range(4)
    ]
    # data sources (product.md §13) over a DuckDB file of the run's own; none is named by an
    # experiment, so DELETE may take them
    sources = [f"fz-source-{i}" for i in range(3)]
    _warehouse(out_dir / "fuzz.duckdb")
    for key in sources:
        _ok(admin.post("/v1/data-sources", json=_source(key, out_dir / "fuzz.duckdb")))
    # share links of one running experiment: DELETE …/share/{share_id} draws the two together
    shared = "fz-running-1"
    share_ids = [
        _ok(admin.post(f"/v1/experiments/{shared}/share", json={"note": f"fuzz {i}"}))["id"]
        for i in range(6)
    ]
    _ok(admin.post("/v1/alerts/check"))
    alerts = [a["id"] for a in _ok(admin.get("/v1/alerts"))["items"]]

    def of(prefix: str) -> list[str]:
        return [k for k in states if k.startswith(prefix)]

    every = [*states, "fz-layered", *to_approve]
    dictionaries: dict[str, list[Any]] = {
        "experiments": every,
        "drafts": of("fz-draft"),
        "to_approve": to_approve,
        "running": [*of("fz-running"), "fz-layered"],
        "paused": of("fz-paused"),
        "started": [*of("fz-running"), *of("fz-paused")],
        "stopped": of("fz-stopped"),
        "metrics": [m["key"] for m in metrics],
        "layers": ["fz-layer"],
        "templates": ["fz-template", "fz-approval"],
        "webhook_ids": hooks,
        "key_ids": spare_ids,
        "alert_ids": alerts or [1],
        "receiver": [CLOSED_RECEIVER],
        "sources": sources,
        "shared": [shared],
        "share_ids": share_ids,
    }
    # The seeds each templated path draws its `{key}` from (invented values 5 % of the time).
    key_of = {
        "/v1/experiments/{key}": "experiments",
        "/v1/experiments/{key}/audit": "experiments",
        "/v1/experiments/{key}/notes": "experiments",
        "/v1/experiments/{key}/report": "experiments",
        "/v1/experiments/{key}/results": "experiments",
        "/v1/experiments/{key}/approve": "to_approve",
        "/v1/experiments/{key}/archive": "drafts",
        "/v1/experiments/{key}/start": "drafts",
        "/v1/experiments/{key}/pause": "running",
        "/v1/experiments/{key}/phases": "started",
        "/v1/experiments/{key}/resume": "paused",
        "/v1/experiments/{key}/stop": "started",
        "/v1/experiments/{key}/conclude": "stopped",
        "/ofrep/v1/evaluate/flags/{key}": "running",
        "/v1/metrics/{key}": "metrics",
        "/v1/layers/{key}": "layers",
        "/v1/templates/{key}": "templates",
        "/v1/templates/{key}/versions": "templates",
        "/v1/data-sources/{key}": "sources",
        "/v1/data-sources/{key}/test": "sources",
        "/v1/experiments/{key}/share": "experiments",
        "/v1/experiments/{key}/results/refresh": "started",
        "/v1/experiments/{key}/results/snapshots": "experiments",
        "/v1/experiments/{key}/results/timeseries": "started",
    }
    lines = ["# Generated by .ci/fuzz_seed.py: what the seeded database holds."]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    lines += [
        "[parameters]",
        '"path.webhook_id" = { dictionary = "webhook_ids", probability = 0.95 }',
        '"path.key_id" = { dictionary = "key_ids", probability = 0.95 }',
        '"path.alert_id" = { dictionary = "alert_ids", probability = 0.95 }',
        '"body.url" = { dictionary = "receiver", probability = 1.0 }',
    ]
    # Operations of one method that need other seeds than their path's (listed first: the first
    # matching [[operations]] entry applies): only a draft takes every field of a PATCH.
    lines += [
        "[[operations]]",
        'include-name = "PATCH /v1/experiments/{key}"',
        'parameters = { "path.key" = { dictionary = "drafts", probability = 0.95 } }',
        "[[operations]]",
        'include-path = "/v1/experiments/{key}/share/{share_id}"',
        'parameters = { "path.key" = { dictionary = "shared", probability = 0.95 }, '
        '"path.share_id" = { dictionary = "share_ids", probability = 0.95 } }',
    ]
    for path, name in key_of.items():
        lines += [
            "[[operations]]",
            f'include-path = "{path}"',
            f'parameters = {{ "path.key" = {{ dictionary = "{name}", probability = 0.95 }} }}',
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seeds.toml").write_text("\n".join(lines) + "\n")
    (out_dir / "keys.env").write_text(
        "".join(f"FUZZ_KEY_{role.upper()}={key}\n" for role, key in keys.items())
    )
    print(
        f"seeded: {len(every)} experiments, {len(metrics)} metrics, {len(hooks)} webhooks, "
        f"{len(spare_ids)} spare keys, {len(alerts)} alerts"
    )


if __name__ == "__main__":
    seed(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
