"""HTTP routes: ``GET /v1/sdk/config``, ``POST /v1/assign`` and the OFREP endpoints.

Every request authenticates through :func:`service.auth.authenticate` with a
:class:`service.auth.KeyCache` that reads the API key and the config version in one query (most
requests: none, the cache answers); the rest is CPU work on the cached config, done in the event
loop. No write transaction is taken (on SQLite it would serialize every assignment behind
event ingestion); exposure logging opens its own write session. Auth is the usual Bearer API key,
role ``sdk`` (or admin).

OFREP answers its own error shapes (``{key?, errorCode, errorDetails}``), as the protocol requires;
missing or wrong keys still get our RFC 9457 problem+json 401/403 (OFREP defines no body for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from service.auth import SDK, KeyCache, Principal, authenticate
from service.db import utcnow
from service.deps import BearerFor
from service.errors import responses

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


def key_cache(app: Any) -> KeyCache:
    """The application's key lookups, each with the config version read in the same query."""
    cache: KeyCache | None = getattr(app.state, "sdk_key_cache", None)
    if cache is None:
        cache = KeyCache(also=service.CONFIG_VERSION_COLUMNS)
        app.state.sdk_key_cache = cache
    return cache


def admit(request: Request) -> SdkAccess:
    """Admit keys with role sdk (or admin) and get the current config: one query in all (none
    while :class:`~service.auth.KeyCache` remembers the key).

    It runs inline: one indexed lookup costs less than a thread-pool hop.
    """
    cache = key_cache(request.app)
    version: tuple[Any, ...] = ()

    def lookup(token: str) -> Principal | None:
        nonlocal version
        principal, version = cache.get(token)
        return principal

    principal = SDK.check(authenticate(request, lookup))
    if not version:
        # Another credential than a Bearer key (service.auth.resolve_other_credential): the
        # empty token matches no key, so the query reads the config version alone.
        version = cache.get("")[1]
    snapshot = config_cache(request.app).current(version, service.load_config)
    return SdkAccess(principal=principal, snapshot=snapshot)


# The Bearer scheme (OpenAPI) and roles of the routes that authenticate with admit().
SDK_BEARER = BearerFor(SDK)


async def sdk_access(request: Request, _: Annotated[object, Depends(SDK_BEARER)]) -> SdkAccess:
    """The dependency form of :func:`admit` (it also declares the Bearer scheme in OpenAPI)."""
    return admit(request)


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
    dependencies=[Depends(SDK_BEARER)],
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
    access = admit(request)
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
