"""Parse a ``POST /v1/events`` body into plain dicts and the rejected events (step 1 of
:mod:`service.events.service`)."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from pydantic import ValidationError

from service.errors import AppError, FieldError, PayloadTooLargeError, ValidationFailedError
from service.events.models import (
    MAX_EVENTS_PER_REQUEST,
    RejectedEvent,
    batch_adapter,
    event_adapter,
)
from service.json_body import JsonBodyError, load_json

__all__ = ["MalformedJsonError", "ParsedBatch", "body_error", "parse_batch", "rejection"]


class MalformedJsonError(AppError):
    status = 400
    code = "malformed_json"
    title = "Malformed JSON"


class ParsedBatch(NamedTuple):
    """A parsed request body: the valid events as plain dicts, and the rejected ones.

    ``events[i]`` has the keys of :class:`ExposureIn` or :class:`ConversionIn` (``phase`` and
    ``value`` may be missing); it sits at position ``indexes[i]`` of the request, or at ``i`` when
    ``indexes`` is ``None`` (every event was valid).
    """

    events: list[dict[str, Any]]
    indexes: list[int] | None
    rejected: list[RejectedEvent]


# Error types of the models that have a code of their own in ``rejected`` (product.md §5).
_VALUE_RANGE_TYPES = frozenset(
    {"value_out_of_range", "finite_number", "greater_than_equal", "less_than_equal"}
)


def _error_code(exc: ValidationError) -> str:
    """``value_out_of_range`` or ``timestamp_out_of_range`` when that is the only problem of the
    event, else ``invalid``."""
    codes = set()
    for err in exc.errors(include_url=False):
        loc = err.get("loc", ())
        kind = err.get("type")
        if loc and loc[-1] == "value" and kind in _VALUE_RANGE_TYPES:
            codes.add("value_out_of_range")
        elif kind == "timestamp_out_of_range":
            codes.add("timestamp_out_of_range")
        else:
            return "invalid"
    return codes.pop() if len(codes) == 1 else "invalid"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("exposure", "conversion"):  # the discriminator tag
            loc = loc[1:]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def rejection(index: int, exc: ValidationError) -> RejectedEvent:
    return RejectedEvent(index=index, error=_describe(exc), code=_error_code(exc))


def _no_repeated_key(body: bytes, events: list[dict[str, Any]]) -> bool:
    """Whether no object of ``body`` repeats a key, for a body the one-pass validator accepted
    as ``events``; ``False`` also when it cannot tell (the per-event path then decides).

    pydantic-core keeps the last of repeated keys, and counting them needs no second parse.
    A ``:`` outside strings separates a key from its value, so the body's colons are its keys
    plus the colons inside its strings. The validated dicts have one key per distinct key of
    the body (no unknown key passes), and the decoded strings hold at most the body's colons
    inside strings, unless one is escaped as ``\\u003a`` (then: cannot tell). So
    ``colons == 1 + Σ len(event) + Σ colons of the events' strings`` exactly when no key is
    repeated. Every timestamp has two or more colons: when the count is ``1 + Σ len + 2 n``
    (the common case, checked first without a loop in Python) there is no repeat.
    """
    if b"\\u003a" in body or b"\\u003A" in body:
        return False
    colons = body.count(b":")
    keys = 1 + sum(map(len, events))
    if colons == keys + 2 * len(events):
        return True
    inside = sum(v.count(":") for ev in events for v in ev.values() if v.__class__ is str)
    return colons == keys + inside


def body_error(message: str, *, code: str = "malformed_json") -> MalformedJsonError:
    """A 400 about the request body as a whole (field ``body``)."""
    return MalformedJsonError(
        f"The request body is {message}",
        errors=[FieldError(field="body", message=message, type=code)],
        code=code,
    )


def parse_batch(body: bytes) -> ParsedBatch:
    """Parse a ``{events: [...]}`` body and validate every event.

    Parameters
    ----------
    body : bytes
        The raw request body.

    Returns
    -------
    ParsedBatch
        The valid events (plain dicts) with their index in the batch, and the rejected events
        with their index and the reason.

    Raises
    ------
    MalformedJsonError
        The body is not JSON, repeats a key in an object, or nests deeper than 32 (400).
    ValidationFailedError
        The body is not an object with exactly one list field ``events`` (422).
    PayloadTooLargeError
        More than 10,000 events (413).

    Notes
    -----
    Fast path: one pass of pydantic-core's JSON validator over the whole body into dicts
    (``batch_adapter``; about 2 µs an event, no Python per event), and a count of the body's
    colons that proves no key was repeated (:func:`_no_repeated_key`); its schema bounds the
    nesting. On any error the slow path parses with :func:`service.json_body.load_json` and
    validates each event on its own with the models, which says which events are bad and why;
    the good ones of the batch go on.
    """
    try:
        # The later steps read the events as plain dicts (a TypedDict is no dict[str, Any]).
        fast = cast(list[dict[str, Any]], batch_adapter.validate_json(body)["events"])
    except ValidationError:
        pass
    else:
        if _no_repeated_key(body, fast):
            return ParsedBatch(fast, None, [])
    try:
        data = load_json(body)
    except JsonBodyError as exc:
        raise body_error(exc.message, code=exc.code) from None
    if not isinstance(data, dict):
        raise ValidationFailedError.on("body", 'send an object: {"events": [...]}')
    extra = sorted(set(data) - {"events"})
    if extra:
        raise ValidationFailedError(
            f'unknown fields {extra}; the body is {{"events": [...]}}',
            errors=[FieldError(field=k, message="unknown field") for k in extra],
        )
    events = data.get("events")
    if not isinstance(events, list):
        raise ValidationFailedError.on("events", "give a list of events")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLargeError(
            f"{len(events)} events in one request; send at most {MAX_EVENTS_PER_REQUEST:,}.",
            code="too_many_events",
        )
    valid: list[dict[str, Any]] = []
    indexes: list[int] = []
    rejected: list[RejectedEvent] = []
    validate = event_adapter.validate_python
    for index, raw in enumerate(events):
        try:
            valid.append(vars(validate(raw)))
        except ValidationError as exc:
            rejected.append(rejection(index, exc))
        else:
            indexes.append(index)
    return ParsedBatch(valid, indexes, rejected)
