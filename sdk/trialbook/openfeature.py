"""OpenFeature provider: experiments as string flags whose value is the variant key.

Install with ``pip install "trialbook[openfeature]"``::

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from trialbook import Client
    from trialbook.openfeature import TrialbookProvider

    api.set_provider(TrialbookProvider(Client("https://trialbook.example.com", "sdk-key")))
    flags = api.get_client()
    variant = flags.get_string_value("new-checkout", "control",
                                     EvaluationContext("user-42", {"country": "FR"}))
    flags.track("purchase", EvaluationContext("user-42"), TrackingEventDetails(value=31.5))

Flag key = experiment key, targeting key = unit id, context attributes = targeting attributes.
Exposures are logged by the client's ``assign``. Reasons map as:

- ``split`` → ``SPLIT``; ``override`` → ``TARGETING_MATCH`` (value: the variant);
- ``not_targeted``, ``traffic_excluded``, ``layer_excluded``, ``holdout`` → ``DEFAULT`` and
  ``not_running`` → ``DISABLED`` (value: the experiment's control);
- errors (value: the caller's default, reason ``ERROR``): ``unknown_experiment`` →
  ``FLAG_NOT_FOUND``, ``no_config`` → ``PROVIDER_NOT_READY``, ``error`` → ``PARSE_ERROR``, no
  targeting key → ``TARGETING_KEY_MISSING``, a boolean/integer/float/object flag →
  ``TYPE_MISMATCH``.

``flag_metadata`` carries ``trialbook_reason``, ``in_experiment`` and ``phase`` (when known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from trialbook.assignment import Reason as TrialbookReason
from trialbook.client import ClientLike

__all__ = ["TrialbookProvider"]

T = TypeVar("T")

_DEFAULT_REASONS = frozenset(
    {
        TrialbookReason.NOT_TARGETED,
        TrialbookReason.TRAFFIC_EXCLUDED,
        TrialbookReason.LAYER_EXCLUDED,
        TrialbookReason.HOLDOUT,
    }
)
_ERROR_CODES = {
    TrialbookReason.UNKNOWN_EXPERIMENT: ErrorCode.FLAG_NOT_FOUND,
    TrialbookReason.NO_CONFIG: ErrorCode.PROVIDER_NOT_READY,
    TrialbookReason.ERROR: ErrorCode.PARSE_ERROR,
}


class TrialbookProvider(AbstractProvider):
    """Resolve OpenFeature string flags with a Trialbook client.

    Parameters
    ----------
    client : ClientLike
        A :class:`trialbook.Client` (or ``trialbook.testing.FakeClient``).
    """

    def __init__(self, client: ClientLike) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        """Return the provider's name, ``trialbook``."""
        return Metadata(name="trialbook")

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Assign the context's targeting key to a variant of the experiment ``flag_key``.

        Parameters
        ----------
        flag_key : str
            The experiment key.
        default_value : str
            Returned on errors.
        evaluation_context : EvaluationContext, optional
            ``targeting_key`` is the unit id; ``attributes`` feed targeting.

        Returns
        -------
        FlagResolutionDetails
            Value, variant, reason and error code as in the module docstring.
        """
        unit_id = evaluation_context.targeting_key if evaluation_context else None
        if not unit_id:
            return FlagResolutionDetails(
                value=default_value,
                reason=Reason.ERROR,
                error_code=ErrorCode.TARGETING_KEY_MISSING,
                error_message="the evaluation context has no targeting_key (the unit id)",
            )
        attributes = dict(evaluation_context.attributes) if evaluation_context else {}
        assignment = self.client.assign(flag_key, unit_id, attributes)
        metadata: dict[str, Any] = {
            "trialbook_reason": assignment.reason.value,
            "in_experiment": assignment.in_experiment,
        }
        if assignment.phase is not None:
            metadata["phase"] = assignment.phase
        error_code = _ERROR_CODES.get(assignment.reason)
        if error_code is not None or assignment.variant is None:
            return FlagResolutionDetails(
                value=default_value,
                reason=Reason.ERROR,
                error_code=error_code or ErrorCode.GENERAL,
                error_message=f"trialbook: {assignment.reason.value}",
                flag_metadata=metadata,
            )
        if assignment.reason is TrialbookReason.SPLIT:
            reason = Reason.SPLIT
        elif assignment.reason is TrialbookReason.OVERRIDE:
            reason = Reason.TARGETING_MATCH
        elif assignment.reason is TrialbookReason.NOT_RUNNING:
            reason = Reason.DISABLED
        elif assignment.reason in _DEFAULT_REASONS:
            reason = Reason.DEFAULT
        else:
            reason = Reason.UNKNOWN
        return FlagResolutionDetails(
            value=assignment.variant,
            variant=assignment.variant,
            reason=reason,
            flag_metadata=metadata,
        )

    def _type_mismatch(self, default_value: T) -> FlagResolutionDetails[T]:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message="trialbook experiments are string flags (the variant key)",
        )

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Experiments are string flags: return the default with ``TYPE_MISMATCH``."""
        return self._type_mismatch(default_value)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Experiments are string flags: return the default with ``TYPE_MISMATCH``."""
        return self._type_mismatch(default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Experiments are string flags: return the default with ``TYPE_MISMATCH``."""
        return self._type_mismatch(default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        """Experiments are string flags: return the default with ``TYPE_MISMATCH``."""
        return self._type_mismatch(default_value)

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Record a conversion ``tracking_event_name`` for the context's unit.

        Parameters
        ----------
        tracking_event_name : str
            The conversion event name.
        evaluation_context : EvaluationContext, optional
            Its ``targeting_key`` is the unit id; without one nothing is recorded.
        tracking_event_details : TrackingEventDetails, optional
            Its ``value`` becomes the conversion value.
        """
        unit_id = evaluation_context.targeting_key if evaluation_context else None
        if not unit_id:
            return
        value = tracking_event_details.value if tracking_event_details else None
        self.client.track(tracking_event_name, unit_id, value)
