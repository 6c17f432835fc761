"""Application errors and their RFC 9457 problem+json rendering.

Service code raises :class:`AppError` subclasses; one set of handlers turns them, request
validation errors, HTTP errors and unexpected exceptions into ``application/problem+json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from service.json_body import line_and_column

log = logging.getLogger("trialbook")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://trialbook.dev/problems/"


class FieldError(BaseModel):
    """One invalid field: where it is and what to fix."""

    model_config = ConfigDict(extra="forbid")

    field: str
    message: str
    type: str | None = None


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    """Base of every error the service raises on purpose."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        if code is not None:
            self.code = code


class ValidationFailedError(AppError):
    status = 422
    code = "validation_error"
    title = "The request is invalid"

    @classmethod
    def on(cls, field: str, message: str) -> ValidationFailedError:
        """A validation error on one field."""
        return cls(f"{field}: {message}", errors=[FieldError(field=field, message=message)])


class UnauthorizedError(AppError):
    status = 401
    code = "unauthorized"
    title = "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(AppError):
    status = 403
    code = "forbidden"
    title = "This API key's role may not do this"


class NotFoundError(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(AppError):
    status = 409
    code = "conflict"
    title = "Conflict with the current state"


class PayloadTooLargeError(AppError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class TooManyRequestsError(AppError):
    status = 429
    code = "too_many_requests"
    title = "Too many requests"


def problem_response(
    status: int,
    title: str,
    code: str,
    detail: str | None,
    request: Request | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Render a problem+json response."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
    if errors is not None:
        body["errors"] = [e.model_dump(exclude_none=True) for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if len(parts) > 1 else parts
    return ".".join(parts) if parts else "body"


def validation_field_errors(raw: list[Any]) -> list[FieldError]:
    """Convert pydantic error dicts into :class:`FieldError` objects."""
    out = []
    for err in raw:
        msg = str(err.get("msg", "invalid value"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(
            FieldError(field=_loc_to_field(err.get("loc", ())), message=msg, type=err.get("type"))
        )
    return out


_LINE_COLUMN = re.compile(r"line (\d+) column (\d+)")


def _json_error(err: Mapping[str, Any], doc: Any) -> FieldError:
    """A JSON syntax error as a field error on ``body`` with its line and column.

    FastAPI reports ``json.loads`` errors with the character offset as the location (``loc``
    ``("body", 8)``) and the document in the exception; pydantic's JSON errors (bodies parsed
    with ``model_validate_json``) say the line and column in their message.
    """
    loc = err.get("loc", ())
    reason = (err.get("ctx") or {}).get("error") or err.get("msg", "invalid JSON")
    if len(loc) > 1 and isinstance(loc[1], int) and isinstance(doc, str | bytes):
        line, column = line_and_column(doc, loc[1])
        message = f"not valid JSON at line {line}, column {column}: {reason}"
    else:  # pydantic: "Invalid JSON: expected value at line 1 column 8"
        reason = _LINE_COLUMN.sub(r"line \1, column \2", str(reason))
        message = "not valid JSON: " + reason.removeprefix("Invalid JSON: ")
    return FieldError(field="body", message=message, type="json_invalid")


STATUS_TITLES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("too_many_requests", "Too many requests"),
    502: ("bad_gateway", "The data source failed"),
    503: ("unavailable", "Unavailable"),
    504: ("gateway_timeout", "The data source did not answer in time"),
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that render every error as problem+json."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(
            exc.status, exc.title, exc.code, exc.detail, request, exc.errors, exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            errors = [_json_error(e, exc.body) for e in raw if e.get("type") == "json_invalid"]
            return problem_response(
                400,
                "Malformed JSON",
                "malformed_json",
                "The request body is " + "; ".join(e.message for e in errors),
                request,
                errors,
            )
        errors = validation_field_errors(raw)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return problem_response(
            422, "The request is invalid", "validation_error", detail, request, errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = STATUS_TITLES.get(exc.status_code, ("http_error", "HTTP error"))
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return problem_response(
            exc.status_code, title, code, str(exc.detail), request, headers=headers or None
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "Internal server error",
            "internal_error",
            "An unexpected error occurred; it has been logged.",
            request,
        )


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette lists only the first route's)."""
    from service.routing import api_routes

    methods: set[str] = set()
    for path, route_methods, _route in api_routes(app):
        regex, _fmt, _convertors = compile_path(path)
        if regex.match(request.url.path):
            methods |= route_methods
    return sorted(methods)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring problem+json error statuses for a route."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        desc = STATUS_TITLES.get(status, ("", "Error"))[1]
        if status == 422:
            desc = "Validation error (the fields and what to fix)"
        out[status] = {
            "description": desc,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
