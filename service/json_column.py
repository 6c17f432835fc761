"""A JSON column whose value is checked against its stored schema on the way in and out.

``Column(ValidatedJSON(list[VariantRow]))`` stores what ``JSON`` stores, and tells mypy (through
the field's annotation) and a reader what the column holds: the stored forms are ``TypedDict``\\ s
beside the tables (e.g. :class:`service.experiments.models.VariantRow`), so the code that reads a
row keeps reading plain dicts, with their keys typed.

A value that does not fit its schema is refused before it is written (``StatementError`` from
``ValueError``: a bug, never a client's input, which the request models have checked) and when it
is read (stored by hand, or by a version that wrote another shape). The value itself is stored and
returned as it is: the check neither converts nor reorders, so nothing stored or derived from it
(the results snapshots' fingerprints) changes.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import JSON
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

__all__ = ["ValidatedJSON"]


class ValidatedJSON(TypeDecorator[T], Generic[T]):
    """``JSON`` checked against ``schema`` (a type pydantic validates: a TypedDict, a list of
    them, ``X | None``) when bound and when read."""

    impl = JSON
    cache_ok = True  # the cache key is ``schema`` (a type: hashable and immutable)

    def __init__(self, schema: Any) -> None:
        super().__init__()
        self.schema = schema
        self._adapter: TypeAdapter[T] = TypeAdapter(schema)

    def _checked(self, value: Any, when: str) -> Any:
        if value is None:
            return None
        try:
            self._adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError(f"JSON {when} does not fit {self.schema!r}: {exc}") from None
        return value

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return self._checked(value, "to store")

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return self._checked(value, "read")
