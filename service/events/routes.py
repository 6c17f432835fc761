"""HTTP route for event ingestion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from service.auth import SDK, Principal, authenticate, fetch_key
from service.deps import BearerFor
from service.errors import AppError, responses
from service.events import service
from service.events.models import EventBatchIn, IngestResult

router = APIRouter(prefix="/v1/events", tags=["events"], responses=responses(401, 403))


def _key(token: str) -> Principal | None:
    return fetch_key(token)[0]


def sdk_principal(request: Request, _: Annotated[object, Depends(BearerFor(SDK))]) -> Principal:
    """The caller, its key read in one statement outside any transaction.

    ``service.deps.SessionDep`` opens a write transaction for every POST and holds it for the
    whole request; ingestion takes the write lock only around its inserts, after parsing.
    """
    return SDK.check(authenticate(request, _key))


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``#/$defs/...`` references so the schema stands alone inside the OpenAPI file."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            # A discriminator mapping points at $defs; with the variants inlined the
            # ``propertyName`` alone says how to tell them apart.
            return {k: resolve(v) for k, v in node.items() if k != "mapping"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _request_body() -> dict[str, Any]:
    """The documented body: each event may be anything, because each is judged on its own.

    product.md §5: one bad event never drops the good ones of its batch. An event that is not a
    valid exposure or conversion is answered in ``rejected`` (index and reason) inside a 200, so
    the schema of an item documents the two shapes without restricting what may be sent; the
    batch itself (an object with an ``events`` array of at most 10,000 items) is enforced.
    """
    batch = _inline_refs(EventBatchIn.model_json_schema())
    shapes = batch["properties"]["events"]["items"]
    alternatives = [*shapes.get("oneOf", shapes.get("anyOf", [shapes]))]
    alternatives.append(
        {"description": "Anything else is rejected on its own, in `rejected`, with its index."}
    )
    batch["properties"]["events"]["items"] = {
        "description": "An exposure or a conversion; each event is validated separately.",
        "anyOf": alternatives,
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": batch}}}}


REQUEST_BODY = _request_body()


class UnsupportedMediaTypeError(AppError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type (``application/problem+json``), any parameters."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    return kind == "application" and (sub == "json" or sub.endswith("+json"))


@router.post(
    "",
    response_model=IngestResult,
    responses=responses(400, 413, 415, 422, 429),
    openapi_extra=REQUEST_BODY,
)
async def post_events(
    request: Request, _: Annotated[Principal, Depends(sdk_principal)]
) -> IngestResult:
    """Store a batch of exposures and conversions, idempotently on `event_id`."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        # product.md §5: a body sent as text (or unlabelled) is refused, not guessed at.
        raise UnsupportedMediaTypeError(
            f"Content-Type is {content_type or 'missing'}; send the events as application/json.",
            headers={"Accept-Post": "application/json"},
        )
    body = await request.body()
    return await run_in_threadpool(service.ingest_body, body)
