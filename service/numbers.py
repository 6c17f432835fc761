"""Bounded numbers for request models: one annotation gives the check, its 422 message (the field's
whole range, not only the bound it broke) and the OpenAPI ``minimum``/``maximum``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """``Annotated[float, Range(lo, hi)]``: a finite number in [lo, hi] (open ends on request)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    @property
    def text(self) -> str:
        return (
            f"{'(' if self.lo_open else '['}{_fmt(self.lo)}, "
            f"{_fmt(self.hi)}{')' if self.hi_open else ']'}"
        )

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def _check(self, value: Any) -> Any:
        if isinstance(value, int | float) and not self.contains(float(value)):
            raise PydanticCustomError(
                "out_of_range",
                "must be in {range}; got {value}",
                {"range": self.text, "value": _fmt(float(value))},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out["exclusiveMinimum" if self.lo_open else "minimum"] = self.lo
        out["exclusiveMaximum" if self.hi_open else "maximum"] = self.hi
        return out
