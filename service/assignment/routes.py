"""HTTP routes: ``GET /v1/sdk/config``, ``POST /v1/assign`` and the OFREP endpoints.

Every request runs one query (:func:`service.assignment.service.key_and_version`: the API key and
the config version), in the thread pool; the rest is CPU work on the cached config, done in the
event loop. No write transaction is taken (on SQLite it would serialize every assignment behind
event ingestion); exposure logging opens its own write session. Auth is the usual Bearer API key,
role ``sdk`` (or admin).

OFREP answers its own error shapes (``{key?, errorCode, errorDetails}``), as the protocol requires;
missing or wrong keys still get our RFC 9457 problem+json 401/403 (OFREP defines no body for them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from service.assignment import ofrep, service
from service.assignment.models import (
    AssignIn,
    AssignOut,
    OfrepBulkFailure,
    OfrepBulkSuccess,
    OfrepConfiguration,
    OfrepEvaluationFailure,
    OfrepEvaluationRequest,
    OfrepEvaluationSuccess,
    OfrepFlagNotFound,
    OfrepGeneralError,
    SdkConfig,
)
from service.config import get_settings
from service.db import utcnow
from service.deps import Principal, _bearer, require
from service.errors import UnauthorizedError, responses
from service.keys.models import Role
from service.throttle import client_of, throttle_of

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class SdkAccess:
    """An admitted caller and the config snapshot current for this request."""

    principal: Principal
    snapshot: service.ConfigSnapshot


def config_cache(app: Any) -> service.ConfigCache:
    """The application's per-process config cache."""
    cache: service.ConfigCache | None = getattr(app.state, "assignment_cache", None)
    if cache is None:
        cache = service.ConfigCache()
        app.state.assignment_cache = cache
    return cache


_require_sdk = require(Role.sdk)


def admit(authorization: str | None, request: Request) -> SdkAccess:
    """Admit keys with role sdk (or admin) and get the current config: one query in all.

    The same 401/403 rules as :func:`service.deps.get_principal` and :func:`service.deps.require`,
    fused with the config version check because every SDK request needs both. It runs inline: one
    indexed lookup costs less than a thread-pool hop.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("Send an API key as `Authorization: Bearer <key>`.")
    token = token.strip()
    throttle, client = throttle_of(request.app), client_of(request)
    throttle.check(client, token)
    found = _ACCESS_CACHE.get(token)
    if not found.active or found.key_id is None or found.name is None or found.role is None:
        throttle.failed(client)
        raise UnauthorizedError("The API key is unknown or revoked.")
    throttle.succeeded(client, token)
    principal = _require_sdk(Principal(key_id=found.key_id, name=found.name, role=Role(found.role)))
    snapshot = config_cache(request.app).current(found.version, service.load_config)
    return SdkAccess(principal=principal, snapshot=snapshot)


class _AccessCache:
    """Key lookups and config versions remembered for ``ttl`` seconds per token, per process.

    The SDK hot path then runs no query at all for most requests. The price: within one process a
    revoked key or a config change takes effect up to ``ttl`` seconds late (1 s by default,
    ``TRIALBOOK_SDK_CACHE_SECONDS``; 0 turns the cache off).
    """

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, service.KeyAndVersion]] = {}

    def get(self, token: str) -> service.KeyAndVersion:
        ttl = get_settings().sdk_cache_seconds
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = service.key_and_version(token)
        if ttl > 0:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[token] = (now + ttl, found)
        return found

    def clear(self) -> None:
        self._entries.clear()


_ACCESS_CACHE = _AccessCache()
SDK_ROLES = frozenset({Role.sdk, Role.admin})


async def sdk_access(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> SdkAccess:
    """The dependency form of :func:`admit` (it also declares the Bearer scheme in OpenAPI)."""
    return admit(request.headers.get("authorization"), request)


sdk_access.allowed_roles = SDK_ROLES  # type: ignore[attr-defined]  # read by the role-matrix test
SdkAccessDep = Annotated[SdkAccess, Depends(sdk_access)]


async def raw_body(request: Request) -> bytes:
    """The request body as bytes (OFREP reports malformed JSON in its own shape)."""
    return await request.body()


RawBodyDep = Annotated[bytes, Depends(raw_body)]
IfNoneMatch = Annotated[str | None, Header(description="an ETag received before")]

router = APIRouter(tags=["assignment"], responses=responses(401, 403))
ofrep_router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"], responses=responses(401, 403))

_ETAG_HEADER = {"ETag": {"description": "strong entity tag", "schema": {"type": "string"}}}


@router.get(
    "/v1/sdk/config",
    response_model=None,
    responses={
        200: {"model": SdkConfig, "description": "The config", "headers": _ETAG_HEADER},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
    },
)
async def get_sdk_config(access: SdkAccessDep, if_none_match: IfNoneMatch = None) -> Response:
    """Everything an SDK needs to assign locally; send If-None-Match to get 304 when unchanged."""
    snap = access.snapshot
    headers = {"ETag": snap.etag, "Cache-Control": "no-cache"}
    if service.etag_matches(if_none_match, snap.etag):
        return Response(status_code=304, headers=headers)
    return Response(snap.body, media_type=JSON, headers=headers)


@router.post(
    "/v1/assign",
    response_model=None,
    dependencies=[Depends(_bearer)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": AssignIn.model_json_schema()}},
        }
    },
    responses={
        200: {"model": AssignOut, "description": "One answer per experiment"},
        **responses(400, 422),
    },
)
async def post_assign(request: Request) -> Response:
    """Assign a unit to experiments on the server (optionally logging its exposures)."""
    # The hot path: auth, body and validation by hand (FastAPI's dependency and body machinery
    # cost more than the assignment itself); errors render exactly as elsewhere.
    access = admit(request.headers.get("authorization"), request)
    try:
        body = AssignIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc
    assignments = service.assign(access.snapshot.compiled, body, access.snapshot.listed)
    if body.log_exposure:
        await run_in_threadpool(
            service.log_exposures,
            assignments,
            body.unit_id,
            utcnow(),
            body.attributes,
            access.snapshot.compiled.raw,
        )
    return Response(service.render_assignments(assignments), media_type=JSON)


post_assign.allowed_roles = SDK_ROLES  # type: ignore[attr-defined]  # read by the role-matrix test


# ------------------------------------------------------------------------------------------ OFREP

_OFREP_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {JSON: {"schema": OfrepEvaluationRequest.model_json_schema()}},
    }
}


@ofrep_router.post(
    "/evaluate/flags/{key}",
    response_model=None,
    openapi_extra=_OFREP_BODY,
    responses={
        200: {"model": OfrepEvaluationSuccess, "description": "OFREP evaluation"},
        400: {"model": OfrepEvaluationFailure, "description": "Bad evaluation request"},
        404: {"model": OfrepFlagNotFound, "description": "No such experiment"},
        500: {"model": OfrepGeneralError, "description": "The experiment cannot be evaluated"},
    },
)
async def ofrep_evaluate_flag(key: str, raw: RawBodyDep, access: SdkAccessDep) -> JSONResponse:
    """OFREP single flag evaluation: the experiment's variant for context.targetingKey.

    A unit in the experiment (reason SPLIT) gets its exposure logged, once per unit and phase
    (the deterministic event id of /v1/assign with log_exposure)."""
    try:
        unit_id, attributes = ofrep.parse_request(raw)
    except ofrep.OfrepError as exc:
        return JSONResponse(
            {"key": key, "errorCode": exc.code, "errorDetails": exc.details},
            status_code=exc.status,
        )
    compiled = access.snapshot.compiled
    assignment = compiled.evaluate(key, unit_id, attributes)
    status, body = ofrep.evaluation(assignment)
    if status == 500:
        body = {"errorDetails": body["errorDetails"]}
    elif assignment.in_experiment:  # a single evaluation logs the exposure (product.md §9)
        await run_in_threadpool(
            service.log_exposures, [assignment], unit_id, utcnow(), attributes, compiled.raw
        )
    return JSONResponse(body, status_code=status)


@ofrep_router.post(
    "/evaluate/flags",
    response_model=None,
    openapi_extra=_OFREP_BODY,
    responses={
        200: {
            "model": OfrepBulkSuccess,
            "description": "Every experiment evaluated",
            "headers": _ETAG_HEADER,
        },
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        400: {"model": OfrepBulkFailure, "description": "Bad evaluation request"},
    },
)
async def ofrep_evaluate_flags(
    raw: RawBodyDep, access: SdkAccessDep, if_none_match: IfNoneMatch = None
) -> Response:
    """OFREP bulk evaluation: every experiment of the SDK config (no draft) for one context, with
    ETag / 304; it logs no exposure (it evaluates flags the unit may never see)."""
    try:
        unit_id, attributes = ofrep.parse_request(raw)
    except ofrep.OfrepError as exc:
        return JSONResponse(
            {"errorCode": exc.code, "errorDetails": exc.details}, status_code=exc.status
        )
    snap = access.snapshot
    body = ofrep.evaluate_all(snap.compiled, unit_id, attributes, snap.listed)
    etag = service.strong_etag(body)
    if service.etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type=JSON, headers={"ETag": etag})


@ofrep_router.get("/configuration", response_model=OfrepConfiguration)
def ofrep_configuration(_: SdkAccessDep) -> OfrepConfiguration:
    """OFREP provider configuration: string flags, polling supported."""
    return OfrepConfiguration(
        name="Trialbook",
        capabilities={
            "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["string"]},
        },
    )
