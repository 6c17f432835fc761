"""The request-body examples published in the OpenAPI file are bodies the server accepts."""

from __future__ import annotations

from typing import Any

from service.openapi_examples import REQUEST_EXAMPLES


def test_every_published_request_example_is_accepted(client: Any, keys: dict[str, Any]) -> None:
    admin, sdk = keys["admin"], keys["sdk"]
    spec = client.get("/openapi.json").json()
    for metric in (
        {"key": "purchase", "name": "Purchase", "type": "binomial", "event": "purchase"},
        {"key": "errors", "name": "Errors", "type": "binomial", "event": "error"},
    ):
        assert client.post("/v1/metrics", json=metric, headers=admin).status_code == 201
    # the path operations act on this experiment, in the state each one needs
    running = "one-page-checkout-example"
    order = [
        ("post", "/v1/metrics"),
        ("post", "/v1/templates"),
        ("post", "/v1/data-sources"),
        ("post", "/v1/experiments"),
        ("patch", "/v1/experiments/{key}"),  # a draft takes every field
        ("post", "/v1/experiments/{key}/notes"),
        ("post", "/v1/experiments/{key}/share"),
        ("post", "/ofrep/v1/evaluate/flags"),
        ("post", "/ofrep/v1/evaluate/flags/{key}"),
        ("post", "/v1/experiments/{key}/phases"),
        ("post", "/v1/experiments/{key}/conclude"),
    ]
    assert sorted(order) == sorted(REQUEST_EXAMPLES)
    for method, path in order:
        published = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert published["examples"] == REQUEST_EXAMPLES[(method, path)]
        if path == "/ofrep/v1/evaluate/flags":
            assert client.post(f"/v1/experiments/{running}/start", headers=admin).status_code == 200
        if path == "/v1/experiments/{key}/conclude":
            assert client.post(f"/v1/experiments/{running}/stop", headers=admin).status_code == 200
        for example in published["examples"].values():
            url = path.replace("{key}", running)
            headers = sdk if path.startswith("/ofrep") else admin
            r = client.request(method, url, json=example["value"], headers=headers)
            assert r.status_code < 300, (method, path, r.status_code, r.text)
