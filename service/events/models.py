"""Event tables (exposure, conversion, exposure_unit) and the event schemas of product.md §5.

Storage contract (other domains read these tables):

- ``exposure``: one row per accepted exposure, ``event_id`` unique, ``late`` when it arrived for a
  phase or experiment that had already ended.
- ``conversion``: one row per accepted conversion, ``event_id`` unique, indexed on
  (``name``, ``unit_id``, ``ts``) for the analysis.
- ``exposure_unit``: one row per (experiment, phase, unit), maintained at ingestion in the same
  transaction: the variant of the earliest exposure, its timestamp (``first_ts``) and whether the
  unit saw more than one variant (``multiple``). The results engine reads this table and
  ``conversion``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictInt,
    TypeAdapter,
    with_config,
)
from pydantic import (
    Field as PField,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Index
from sqlmodel import Column, Field, SQLModel

# pydantic needs typing_extensions' TypedDict before Python 3.12.
from typing_extensions import TypedDict

from service.db import UTCDateTime, utcnow

MAX_EVENTS_PER_REQUEST = 10_000
EVENT_ID_MAX = 64
UNIT_ID_MAX = 256
NAME_MAX = 200

# Bounds of product.md §5: no stored event can break an analysis. |value| <= 1e12 keeps every
# per-variant sum of squares finite (1e24 per unit, far below 1.8e308, for billions of units);
# timestamps from 2000-01-01 (UTC) to 24 hours after the server's clock.
VALUE_MAX = 1e12
TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMP_AHEAD = timedelta(hours=24)
# Control characters (C0, DEL, C1) and lone surrogates: PostgreSQL refuses NUL in text, and a
# surrogate cannot be encoded for either database. Refused in every string of an event.
CONTROL_CHARACTERS = "\x00-\x1f\x7f-\x9f"
# The same test as a pattern for the one-pass validator (pydantic-core refuses lone surrogates
# in any string on its own).
TEXT_PATTERN = f"^[^{CONTROL_CHARACTERS}]*$"
_REFUSED = re.compile(f"[{CONTROL_CHARACTERS}\ud800-\udfff]")

# ---------------------------------------------------------------------------------------- tables


class Exposure(SQLModel, table=True):
    """One accepted exposure: ``unit_id`` saw ``variant`` of an experiment's phase at ``ts``."""

    __tablename__ = "exposure"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=EVENT_ID_MAX, unique=True)
    experiment_id: int = Field(foreign_key="experiment.id", ondelete="CASCADE")
    phase: int
    variant: str = Field(max_length=64)
    unit_id: str = Field(max_length=UNIT_ID_MAX)
    ts: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    payload_hash: str = Field(max_length=32)
    late: bool = False


class Conversion(SQLModel, table=True):
    """One accepted conversion: ``unit_id`` produced event ``name`` with ``value`` at ``ts``."""

    __tablename__ = "conversion"
    __table_args__ = (
        Index("ix_conversion_name_unit_ts", "name", "unit_id", "ts"),
        # Covering index for the per-unit join of the analysis (migration 0003).
        Index("ix_conversion_unit_ts_name_value", "unit_id", "ts", "name", "value"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=EVENT_ID_MAX, unique=True)
    name: str = Field(max_length=NAME_MAX)
    unit_id: str = Field(max_length=UNIT_ID_MAX)
    value: float = 1.0
    ts: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )
    payload_hash: str = Field(max_length=32)


class ExposureUnit(SQLModel, table=True):
    """A unit's first exposure in an experiment's phase, and whether it saw several variants."""

    __tablename__ = "exposure_unit"
    __table_args__ = (
        # Per-variant reads of the results engine (migration 0005).
        Index(
            "ix_exposure_unit_variant",
            "experiment_id",
            "phase",
            "variant",
            "unit_id",
            "first_ts",
            "multiple",
        ),
    )

    experiment_id: int = Field(foreign_key="experiment.id", primary_key=True, ondelete="CASCADE")
    phase: int = Field(primary_key=True)
    unit_id: str = Field(max_length=UNIT_ID_MAX, primary_key=True)
    variant: str = Field(max_length=64)
    first_ts: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    multiple: bool = False
    # The experiment's `dimensions` among the first exposure's attributes, values as text
    # (product.md §5, §12; migration 0006). NULL when the exposure carried none.
    attributes: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


# --------------------------------------------------------------------------------------- schemas


def _timestamp_input(value: Any) -> Any:
    """Accept an ISO-8601 string or a datetime; refuse numbers (a bare number has no time zone)."""
    if isinstance(value, str | datetime):
        return value
    raise ValueError(
        "timestamp must be an ISO-8601 string with a time zone, e.g. 2026-01-31T12:00:00Z"
    )


def timestamp_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The instants an event's timestamp may take: 2000-01-01T00:00Z to 24 h after ``now``."""
    return TIMESTAMP_MIN, (now or utcnow()) + TIMESTAMP_AHEAD


def _timestamp_in_range(value: datetime) -> datetime:
    low, high = timestamp_bounds()
    if not low <= value <= high:  # aware datetimes compare as instants, without overflow
        raise PydanticCustomError(
            "timestamp_out_of_range",
            "must be from 2000-01-01T00:00:00Z to 24 hours after the server's clock "
            "(now {high}); send the time the event happened",
            {"high": high.isoformat(timespec="seconds")},
        )
    return value


def _int_text(value: int) -> str:
    """An integer for a message: itself if short (no float conversion, no 4,300-digit limit)."""
    digits = int(value.bit_length() * 0.30103) + 1
    return str(value) if digits <= 20 else f"an integer of about {digits} digits"


def _value_in_range(value: Any) -> Any:
    """Refuse a number outside [-1e12, 1e12] (NaN and infinities too); other types pass on."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # the float validator refuses it
    # NaN fails both comparisons; a huge int compares exactly (no float conversion).
    if not -VALUE_MAX <= value <= VALUE_MAX:
        raise PydanticCustomError(
            "value_out_of_range",
            "must be a finite number with |value| <= 1e12, got {value}",
            {"value": repr(value) if isinstance(value, float) else _int_text(value)},
        )
    return value


def _text(value: Any) -> Any:
    """Refuse NUL, other control characters and lone surrogates (before the str checks)."""
    if isinstance(value, str):
        found = _REFUSED.search(value)
        if found is not None:
            raise PydanticCustomError(
                "control_character",
                "must not contain NUL or other control characters "
                "(found {char} at position {position})",
                {"char": f"U+{ord(found.group()):04X}", "position": found.start()},
            )
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_timestamp_input), AfterValidator(_timestamp_in_range)
]
# The range is in the schema (OpenAPI) and checked first in Python, so that every number out of
# it (1e999 is infinite once parsed) is refused with one code, ``value_out_of_range``.
Value = Annotated[
    float, PField(strict=True, ge=-VALUE_MAX, le=VALUE_MAX), BeforeValidator(_value_in_range)
]
# Every string of an event (attribute names and values too): no control character.
EventText = Annotated[str, BeforeValidator(_text)]
_EVENT_ID_FIELD = PField(
    min_length=1,
    max_length=EVENT_ID_MAX,
    pattern=r"^[\x21-\x7e]+$",
    description="client-made unique id (a UUID; UUIDv7 recommended)",
)
EventId = Annotated[str, BeforeValidator(_text), _EVENT_ID_FIELD]
UnitId = Annotated[EventText, PField(min_length=1, max_length=UNIT_ID_MAX)]
ATTRIBUTES_MAX = 50
ATTRIBUTE_VALUE_MAX = 256
# Exposure attributes (product.md §5): {name: string | number | bool}; those named in the
# experiment's `dimensions` are kept with the unit's first exposure (§12).
AttributeName = Annotated[str, PField(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")]
AttributeValue = (
    Annotated[str, PField(max_length=ATTRIBUTE_VALUE_MAX, pattern=TEXT_PATTERN)]
    | StrictBool
    | StrictInt
    | Annotated[float, PField(allow_inf_nan=False)]
)
Attributes = Annotated[dict[AttributeName, AttributeValue], PField(max_length=ATTRIBUTES_MAX)]


class ExposureIn(BaseModel):
    """Unit ``unit_id`` saw ``variant`` of ``experiment`` at ``timestamp``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    type: Literal["exposure"]
    experiment: EventText = PField(min_length=1, max_length=80)
    variant: EventText = PField(min_length=1, max_length=64)
    unit_id: UnitId
    timestamp: Timestamp
    phase: int | None = PField(
        default=None,
        ge=1,
        le=1_000_000,
        strict=True,
        description="the experiment phase the unit was assigned in; default the current phase",
    )
    attributes: Attributes | None = PField(
        default=None,
        description="the unit's attributes; those named in the experiment's `dimensions` are "
        "kept with its first exposure and slice the results",
    )


class ConversionIn(BaseModel):
    """Unit ``unit_id`` produced event ``name`` with ``value`` at ``timestamp``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    type: Literal["conversion"]
    name: EventText = PField(min_length=1, max_length=NAME_MAX)
    unit_id: UnitId
    value: Value = 1.0
    timestamp: Timestamp


EventIn = Annotated[ExposureIn | ConversionIn, PField(discriminator="type")]
event_adapter: TypeAdapter[ExposureIn | ConversionIn] = TypeAdapter(EventIn)


class EventBatchIn(BaseModel):
    """The body of ``POST /v1/events`` (for the OpenAPI document; the route parses per event)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = PField(max_length=MAX_EVENTS_PER_REQUEST)


# ---------------------------------------------------------------- fast path (internal, no models)
# The same fields and constraints as ExposureIn / ConversionIn, validated in one pydantic-core
# pass over the raw JSON body into plain dicts (no model instances, no Python validator). A JSON
# timestamp must be a string either way (strict text refuses numbers exactly as
# ``_timestamp_input`` does). Any error, and ``parse_batch`` falls back to per-event validation
# with the models above, which says which event is bad and why. tests/service/events check that
# both paths accept and refuse the same events.
_PHASE = Annotated[int, PField(ge=1, le=1_000_000, strict=True)]
# RFC 3339 text with a time zone, the shape SDKs send: kept as text here, because turning it into
# a datetime and back into text costs more than the rest of an event's preparation. The range of
# each field (month 13, February 30) is checked by ``service.events.prepare.prepare``, which asks
# the models when ``datetime.fromisoformat`` refuses one. Any other shape the models accept (a
# space for ``T``, a lower-case ``z``, 7+ fraction digits) fails this pattern: the batch takes
# the per-event path, which is slower but accepts it.
RFC3339_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$"
_TIMESTAMP_TEXT = Annotated[str, PField(pattern=RFC3339_PATTERN, strict=True)]
# Strings without control characters (pydantic-core refuses lone surrogates itself); the
# timestamp's range is checked by ``service.events.prepare.prepare`` against the clock.
_EVENT_ID = Annotated[str, _EVENT_ID_FIELD]  # printable ASCII: no control character
_UNIT_TEXT = Annotated[str, PField(min_length=1, max_length=UNIT_ID_MAX, pattern=TEXT_PATTERN)]


@with_config(ConfigDict(extra="forbid"))
class ExposureDict(TypedDict):
    """An exposure as validated by the fast path (see :class:`ExposureIn`)."""

    event_id: _EVENT_ID
    type: Literal["exposure"]
    experiment: Annotated[str, PField(min_length=1, max_length=80, pattern=TEXT_PATTERN)]
    variant: Annotated[str, PField(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
    unit_id: _UNIT_TEXT
    timestamp: _TIMESTAMP_TEXT
    phase: NotRequired[_PHASE | None]
    attributes: NotRequired[Attributes | None]


@with_config(ConfigDict(extra="forbid"))
class ConversionDict(TypedDict):
    """A conversion as validated by the fast path (see :class:`ConversionIn`)."""

    event_id: _EVENT_ID
    type: Literal["conversion"]
    name: Annotated[str, PField(min_length=1, max_length=NAME_MAX, pattern=TEXT_PATTERN)]
    unit_id: _UNIT_TEXT
    value: NotRequired[
        Annotated[float, PField(strict=True, allow_inf_nan=False, ge=-VALUE_MAX, le=VALUE_MAX)]
    ]
    timestamp: _TIMESTAMP_TEXT


@with_config(ConfigDict(extra="forbid"))
class EventBatchDict(TypedDict):
    """The body ``{events: [...]}`` as validated by the fast path."""

    events: Annotated[
        list[Annotated[ExposureDict | ConversionDict, PField(discriminator="type")]],
        PField(max_length=MAX_EVENTS_PER_REQUEST),
    ]


batch_adapter: TypeAdapter[EventBatchDict] = TypeAdapter(EventBatchDict)


class RejectedEvent(BaseModel):
    """One event that was not stored, with its position in the batch and why."""

    index: int
    error: str
    code: str = PField(
        description="invalid, value_out_of_range, timestamp_out_of_range, unknown_experiment, "
        "unknown_variant, unknown_phase, not_started"
    )


class IngestResult(BaseModel):
    """Per-batch verdicts: every event is counted in exactly one of the four outcomes."""

    accepted: int = PField(description="new events stored by this request")
    duplicates: int = PField(description="events already stored with the same payload")
    conflicts: int = PField(
        description="events whose event_id is stored with a different payload (the first is kept)"
    )
    rejected: list[RejectedEvent]
    late: int = PField(
        description="of the accepted exposures, those for a phase or experiment that had ended"
    )
