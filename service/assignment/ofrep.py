"""OFREP (OpenFeature Remote Evaluation Protocol): parse an evaluation request, translate the
SDK's assignments into OFREP evaluations (product.md §9).

The evaluation itself is the SDK's (:meth:`trialbook.assignment.CompiledConfig.evaluate`, on the
config of :mod:`service.assignment.service`); this module only speaks the protocol: its request
body ``{context: {targetingKey, ...}}``, its reasons and error codes, and the bulk body whose
canonical JSON hashes into the bulk ETag. The HTTP routes are in
:mod:`service.assignment.routes` (``/ofrep/v1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from trialbook.assignment import Assignment, CompiledConfig, Reason

from service.assignment.models import UNIT_ID_MAX
from service.assignment.service import canonical_json
from service.json_body import JsonBodyError, load_json

__all__ = ["REASONS", "OfrepError", "evaluate_all", "evaluation", "parse_request"]

REASONS: Final[Mapping[str, str]] = {
    Reason.SPLIT.value: "SPLIT",
    Reason.OVERRIDE.value: "TARGETING_MATCH",
    Reason.NOT_RUNNING.value: "DISABLED",
    Reason.NOT_TARGETED.value: "DEFAULT",
    Reason.TRAFFIC_EXCLUDED.value: "DEFAULT",
    Reason.LAYER_EXCLUDED.value: "DEFAULT",
    Reason.HOLDOUT.value: "DEFAULT",
}


class OfrepError(Exception):
    """A request-level OFREP failure: HTTP status, OpenFeature error code and details."""

    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details


def parse_request(raw: bytes) -> tuple[str, dict[str, Any]]:
    """Parse an OFREP request body into ``(unit_id, attributes)``.

    Parameters
    ----------
    raw : bytes
        The request body: ``{context: {targetingKey, ...}}`` (empty means no context).

    Returns
    -------
    tuple of (str, dict)
        The targeting key and the other context fields (the attributes).

    Raises
    ------
    OfrepError
        400 ``PARSE_ERROR`` (not JSON, with line and column; a key repeated in an object;
        nested deeper than 32), ``INVALID_CONTEXT`` (not an object, or a targeting key
        that is not a string of at most 256 characters) or ``TARGETING_KEY_MISSING``.
    """
    payload: Any = {}
    if raw.strip():
        try:
            payload = load_json(raw)  # no repeated key, at most 32 levels deep (product.md §5)
        except JsonBodyError as exc:
            raise OfrepError(400, "PARSE_ERROR", f"body: {exc.message}") from None
    if not isinstance(payload, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "the request body must be an object {context}")
    context = payload.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "`context` must be an object")
    key = context.get("targetingKey")
    if key is None or key == "":
        raise OfrepError(
            400,
            "TARGETING_KEY_MISSING",
            "`context.targetingKey` is required: it is the unit id that is randomized",
        )
    if not isinstance(key, str) or len(key) > UNIT_ID_MAX:
        raise OfrepError(
            400,
            "INVALID_CONTEXT",
            f"`context.targetingKey` must be a string of at most {UNIT_ID_MAX} characters",
        )
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    return key, attributes


def evaluation(assignment: Assignment) -> tuple[int, dict[str, Any]]:
    """Translate one assignment into an OFREP evaluation (status, body).

    Parameters
    ----------
    assignment : Assignment
        From ``CompiledConfig.evaluate``.

    Returns
    -------
    tuple of (int, dict)
        200 ``{key, value, reason, variant, metadata}``; 404 ``FLAG_NOT_FOUND``; 500 ``GENERAL``
        for an experiment the SDK could not evaluate (reason ``error``).
    """
    key = assignment.experiment
    if assignment.reason is Reason.UNKNOWN_EXPERIMENT:
        return 404, {
            "key": key,
            "errorCode": "FLAG_NOT_FOUND",
            "errorDetails": f"no experiment '{key}' (archived, or never registered)",
        }
    reason = REASONS.get(assignment.reason.value)
    if reason is None or assignment.variant is None:
        return 500, {
            "key": key,
            "errorCode": "GENERAL",
            "errorDetails": f"experiment '{key}' cannot be evaluated ({assignment.reason.value})",
        }
    metadata: dict[str, Any] = {
        "in_experiment": assignment.in_experiment,
        "reason": assignment.reason.value,
    }
    if assignment.phase is not None:
        metadata["phase"] = assignment.phase
    return 200, {
        "key": key,
        "value": assignment.variant,
        "reason": reason,
        "variant": assignment.variant,
        "metadata": metadata,
    }


def evaluate_all(
    compiled: CompiledConfig,
    unit_id: str,
    attributes: Mapping[str, Any],
    listed: Iterable[str] | None = None,
) -> bytes:
    """Evaluate every listed flag for one context; return the canonical JSON body.

    Parameters
    ----------
    compiled : CompiledConfig
        The current config.
    unit_id : str
        The targeting key.
    attributes : Mapping
        The other context fields.
    listed : iterable of str, optional
        The flags to evaluate (``ConfigSnapshot.listed``: the experiments of the SDK config, never
        a draft); default every experiment of ``compiled``.

    Returns
    -------
    bytes
        ``{flags: [...]}``, one success or failure per experiment, sorted by key; canonical, so
        its hash is the bulk ETag.
    """
    flags = []
    for key in compiled.experiment_keys() if listed is None else listed:
        status, body = evaluation(compiled.evaluate(key, unit_id, attributes))
        if status == 500:
            body = {k: body[k] for k in ("key", "errorCode", "errorDetails")}
        flags.append(body)
    return canonical_json({"flags": flags})
