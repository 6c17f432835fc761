"""Strict reading of JSON request bodies parsed by hand (``/v1/events``, OFREP).

product.md §5: a body nests objects and arrays at most :data:`MAX_JSON_DEPTH` deep and names no
key twice in one object (``"type": "exposure", "type": "conversion"`` would otherwise be read
last-wins); malformed JSON is reported with its line and column. Routes turn
:class:`JsonBodyError` into their own 400 (problem+json, or OFREP's ``PARSE_ERROR``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "JsonBodyError", "depth_exceeds", "line_and_column", "load_json"]

MAX_JSON_DEPTH = 32  # levels of objects and arrays in a request body


class JsonBodyError(ValueError):
    """The body is not acceptable JSON; ``code`` says why, ``message`` what to fix."""

    def __init__(self, message: str, code: str = "malformed_json") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _RepeatedKeyError(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object, refusing a key given twice."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKeyError(f"the key {json.dumps(key)} appears twice in one object")
            seen.add(key)
    return out


def depth_exceeds(data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests objects and arrays deeper than ``limit`` (the outermost
    container is level 1). Iterative: a stack of the containers still to look into."""
    if not isinstance(data, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def line_and_column(doc: str | bytes, pos: int) -> tuple[int, int]:
    """1-based line and column of character ``pos`` of ``doc`` (as ``json.JSONDecodeError``)."""
    newline: Any = "\n" if isinstance(doc, str) else b"\n"
    line = doc.count(newline, 0, pos) + 1
    return line, pos - doc.rfind(newline, 0, pos)


def load_json(body: bytes | str) -> Any:
    """Parse a request body: no repeated keys, at most :data:`MAX_JSON_DEPTH` levels.

    ``NaN`` and ``Infinity`` (not JSON, but what ``json.dumps`` writes for such floats) are read
    as numbers: the value that holds one is refused by its own validation, not the whole body.

    Raises
    ------
    JsonBodyError
        ``malformed_json`` (with the line and column), ``duplicate_key`` or ``json_too_deep``.
    """
    try:
        data = json.loads(body, object_pairs_hook=_object)
    except _RepeatedKeyError as exc:
        raise JsonBodyError(f"{exc}; send each key once", "duplicate_key") from None
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise JsonBodyError(f"not valid JSON: not UTF-8 text ({exc.reason})") from None
    except RecursionError:  # nested far deeper than the limit: the parser's own guard
        data = None
        too_deep = True
    else:
        too_deep = depth_exceeds(data)
    if too_deep:
        raise JsonBodyError(
            f"nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays", "json_too_deep"
        )
    return data
