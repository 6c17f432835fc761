"""Application factory: the routers, middleware, error handlers and OpenAPI document; what the
process runs beside them (hooks, workers) is wired in :mod:`service.wiring`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.alerts.routes import router as alerts_router
from service.assignment.routes import ofrep_router
from service.assignment.routes import router as assignment_router
from service.config import get_settings
from service.errors import Problem, install_error_handlers, problem_response
from service.events.routes import router as events_router
from service.experiments.routes import router as experiments_router
from service.headers import SecurityHeadersMiddleware
from service.insights.routes import router as insights_router
from service.keys.routes import router as keys_router
from service.layers.routes import layers_router
from service.metrics.routes import router as metrics_router
from service.openapi_examples import add_request_examples
from service.reports.routes import router as reports_router
from service.snapshots.routes import router as results_router
from service.templates.routes import approval_router
from service.templates.routes import router as templates_router
from service.text import refuse_control_characters_in_parameters
from service.warehouse.routes import router as data_sources_router
from service.webhooks.routes import router as webhooks_router
from service.wiring import lifespan, wire

log = logging.getLogger("trialbook")

ROUTERS = [
    # First: the SDK hot path (POST /v1/assign) is matched before every other route.
    assignment_router,
    ofrep_router,
    keys_router,
    metrics_router,
    experiments_router,
    layers_router,
    events_router,
    results_router,
    reports_router,
    templates_router,
    approval_router,
    alerts_router,
    webhooks_router,
    insights_router,
    data_sources_router,
]


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with a 413 problem, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> ASGIApp:
        return problem_response(
            413,
            "Request body too large",
            "payload_too_large",
            f"The request body exceeds {self.limit} bytes; send smaller batches.",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    break
                if declared > self.limit:
                    await self._too_large()(scope, receive, send)
                    return
                # The HTTP server delivers exactly Content-Length bytes: nothing more to count.
                await self.app(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        data = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app() -> FastAPI:
    """Build the FastAPI application."""
    settings = get_settings()
    app = FastAPI(
        title="Trialbook",
        version="0.1.0",
        summary="Self-hosted experimentation: pre-registered A/B tests, assignment, results",
        lifespan=lifespan,
        # No control character in any path or query parameter of any route (service/text.py).
        dependencies=[Depends(refuse_control_characters_in_parameters)],
    )
    wire(app)  # hooks, per-app state; the workers run in the lifespan (service/wiring.py)
    install_error_handlers(app)
    for router in ROUTERS:
        for route in router.routes:
            # One-line route docstrings become the OpenAPI summary (set before the router is
            # included: FastAPI snapshots included routes).
            if isinstance(route, APIRoute) and route.summary is None and route.endpoint.__doc__:
                route.summary = route.endpoint.__doc__.strip().splitlines()[0]
        app.include_router(router)

    @app.get("/healthz", tags=["health"], summary="Liveness probe.")
    def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.openapi = lambda: custom_openapi(app)  # type: ignore[method-assign]  # FastAPI's way
    return app


def custom_openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI 3.1 with the problem+json schema and without FastAPI's default 422 shape."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in problem.pop("$defs", {}).items():
        components[name] = sub
    components["Problem"] = problem
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for op in path_item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if "requestBody" in op:
                # Every body can be malformed JSON (400) or too large (413).
                op["responses"].setdefault(
                    "400", {"description": "Malformed JSON", "content": problem_ref}
                )
                op["responses"].setdefault(
                    "413", {"description": "Request body too large", "content": problem_ref}
                )
            if "401" in op["responses"]:
                # Every authenticated route: too many wrong keys from the client (service.throttle).
                op["responses"].setdefault(
                    "429",
                    {"description": "Too many authentication failures", "content": problem_ref},
                )
            resp = op["responses"].get("422")
            if resp is not None:
                op["responses"]["422"] = {
                    "description": "Validation error (the fields and what to fix)",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
    add_request_examples(schema)
    app.openapi_schema = schema
    return schema
