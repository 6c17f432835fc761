"""Safe text: no NUL or other control characters in any string a request carries.

PostgreSQL refuses NUL in ``text`` columns (a 500 at insert) and SQLite stores it; a control
character in a name or a key corrupts logs, reports and CSV exports. Every request model derives
from :class:`RequestModel`, which checks every string of its input (dict keys, list items and
free-form JSON such as targeting included) before the field rules run, and reports each bad one
with the field rules' other errors in one 422. Path and query parameters are checked by
:func:`refuse_control_characters_in_parameters`, a dependency of the whole application.

Tab, line feed and carriage return are allowed only in the fields named in
:data:`MULTILINE_FIELDS` (hypotheses, descriptions, notes, rationales: text read as prose).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from service.errors import FieldError, ValidationFailedError

# C0 controls, DEL and C1 controls (U+0080..U+009F); multi-line text may keep \t, \n and \r.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

ERROR_TYPE = "control_character"

# Fields (at any depth of a request) whose text may span lines: prose, never a name or a key.
MULTILINE_FIELDS = frozenset(
    {
        "description",
        "hypothesis",
        "change",
        "population",
        "expected_outcome",
        "rationale",
        "note",
        "text",
        "reason",
        "sql",
    }
)


def control_character_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with ``value`` (None when it holds no forbidden character)."""
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found is None:
        return None
    char = found.group()
    what = "a NUL byte" if char == "\x00" else f"the control character U+{ord(char):04X}"
    allowed = (
        "only tab and line breaks are allowed in this text"
        if multiline
        else "this field takes a single line of printable text"
    )
    return f"contains {what} at position {found.start()}; remove it ({allowed})"


def _walk(value: Any, loc: tuple[str | int, ...], multiline: bool) -> Iterator[tuple[Any, str]]:
    if isinstance(value, str):
        problem = control_character_problem(value, multiline=multiline)
        if problem is not None:
            yield loc, problem
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (problem := control_character_problem(k)) is not None:
                yield loc, f"a key {problem}"
                continue
            yield from _walk(v, (*loc, k), multiline or k in MULTILINE_FIELDS)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, (*loc, i), multiline)


def string_problems(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string in ``data`` (a request's raw JSON) holding a control character, by location."""
    return list(_walk(data, (), False))


class RequestModel(BaseModel):
    """Base of every request body: refuses control characters in every string it holds.

    The problems are reported with the field rules' own errors, in one ``ValidationError``.
    """

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_control_characters(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems = string_problems(data) if isinstance(data, dict) else []
        line_errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(ERROR_TYPE, message),
                "loc": loc,
                "input": "…",  # never echo the bad bytes back
            }
            for loc, message in problems
        ]
        try:
            value = handler(data)
        except ValidationError as exc:
            flagged = [loc for loc, _ in problems]
            raw = [
                err
                for err in exc.errors()
                # the same string: the control character is the message to give
                if not any(tuple(err["loc"])[: len(f)] == f for f in flagged)
            ]
            line_errors += _without_union_tags(cls, raw)
            raise ValidationError.from_exception_data(cls.__name__, line_errors) from None
        if line_errors:
            raise ValidationError.from_exception_data(cls.__name__, line_errors)
        return value


def _union_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Fields typed as a union of two or more types: pydantic puts the branch's tag (`float`,
    `none`, a class name) into the location of their errors, after the field's name."""
    out = set()
    for name, info in cls.model_fields.items():
        if get_origin(info.annotation) in (Union, UnionType):
            members = [a for a in get_args(info.annotation) if a is not type(None)]
            if len(members) >= 2:
                out.add(name)
    return frozenset(out)


def _without_union_tags(cls: type[BaseModel], errors: list[Any]) -> list[InitErrorDetails]:
    """The errors with the union tags taken out of their locations (`alpha`, not
    `alpha.function-after[...]`), and without the `Input should be None` of a branch that only
    stands for "omitted" when the field has a real error too."""
    unions = _union_fields(cls)
    out: list[InitErrorDetails] = []
    real: set[Any] = set()
    nones: list[InitErrorDetails] = []
    for err in errors:
        loc = tuple(err["loc"])
        tag = None
        if len(loc) >= 2 and loc[0] in unions and isinstance(loc[1], str):
            tag, loc = loc[1], (loc[0], *loc[2:])
        detail: InitErrorDetails = {
            "type": PydanticCustomError(err["type"], err["msg"]),
            "loc": loc,
            "input": err.get("input"),
        }
        if tag == "none":
            nones.append(detail)
        else:
            real.add(loc[:1])
            out.append(detail)
    out += [d for d in nones if tuple(d["loc"])[:1] not in real]
    return out


async def refuse_control_characters_in_parameters(request: Request) -> None:
    """An application-wide dependency: no control character in a path or query parameter.

    Starlette has decoded ``%00`` into a NUL by the time a route sees it; refused here, it never
    reaches a query (PostgreSQL would fail on it, SQLite would look it up).
    """
    errors: list[FieldError] = []
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := control_character_problem(value)) is not None:
            errors.append(FieldError(field=name, message=problem, type=ERROR_TYPE))
    for name, value in request.query_params.multi_items():
        problem = control_character_problem(name) or control_character_problem(value)
        if problem is not None:
            errors.append(FieldError(field=name, message=problem, type=ERROR_TYPE))
    if errors:
        raise ValidationFailedError(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        )
