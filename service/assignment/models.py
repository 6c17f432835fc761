"""Schemas of server-side assignment (``POST /v1/assign``), the SDK config and OFREP.

The assignment domain owns no table: it reads experiments and layers and writes exposures through
the events domain.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, model_validator
from pydantic import Field as PField

from service.text import RequestModel

# Same bound as the events domain's unit ids, so every assigned unit can be logged as an exposure.
UNIT_ID_MAX = 256
MAX_EXPERIMENTS_PER_REQUEST = 500

Reason = Literal[
    "split",
    "override",
    "not_targeted",
    "traffic_excluded",
    "layer_excluded",
    "holdout",
    "not_running",
    "unknown_experiment",
    "error",
]


# ------------------------------------------------------------------------------ POST /v1/assign


class AssignIn(RequestModel):
    """Assign one unit to experiments."""

    model_config = ConfigDict(extra="forbid")

    unit_id: str = PField(
        max_length=UNIT_ID_MAX,
        strict=True,
        description="the randomization unit id (an empty id is assigned like the SDK does, but "
        "cannot be logged as an exposure)",
    )
    attributes: dict[str, Any] | None = PField(
        default=None, description="attributes for targeting, e.g. {country: 'FR', app: '2.1.0'}"
    )
    experiments: list[Annotated[str, PField(min_length=1, max_length=80, strict=True)]] | None = (
        PField(
            default=None,
            max_length=MAX_EXPERIMENTS_PER_REQUEST,
            description="experiment keys, answered in this order (a draft named here answers its "
            "control, not_running, or its override); omitted: every experiment of the SDK config "
            "(running, paused, stopped and concluded ones, never a draft), sorted by key",
        )
    )
    log_exposure: StrictBool = PField(
        default=False,
        description="write an exposure event for every assignment with in_experiment true",
    )

    @model_validator(mode="after")
    def _loggable(self) -> AssignIn:
        if self.log_exposure and not self.unit_id:
            raise ValueError("log_exposure needs a non-empty unit_id (exposures name their unit)")
        return self


class AssignmentOut(BaseModel):
    """One experiment's answer for the unit."""

    experiment: str
    variant: str | None = PField(description="null only for reason unknown_experiment")
    in_experiment: bool = PField(description="true only for reason split: the unit is analysed")
    reason: Reason


class AssignOut(BaseModel):
    assignments: list[AssignmentOut]


# ------------------------------------------------------------------------------ GET /v1/sdk/config


class ConfigVariant(BaseModel):
    key: str
    weight: float
    is_control: bool


class ConfigLayer(BaseModel):
    seed: str
    holdout_fraction: float = PField(description="[0, holdout_fraction) of the layer is held out")


class ConfigExperiment(BaseModel):
    key: str
    status: Literal["running", "paused", "stopped", "concluded"] = PField(
        description="only experiments that have started; all but running answer the control"
    )
    seed: str
    phase: int
    randomization_unit: str
    variants: list[ConfigVariant] = PField(description="the current phase's variants")
    traffic_fraction: float
    targeting: dict[str, Any] | None = PField(
        description="null when not running; eq/neq/in/not_in leaves come as "
        "{attribute, op, kind, sha256: [hex]} (trialbook.targeting)"
    )
    override_hashes: dict[str, str] = PField(
        description="{hex sha256 of the unit's variant hash input: variant} "
        "(trialbook.hashing.override_hash); unit ids are never served"
    )
    layer: str | None = PField(description="null outside layers")
    layer_range: list[float] | None = PField(description="[lo, hi) slice of the layer's hash space")


class SdkConfig(BaseModel):
    """Everything an SDK needs to assign locally (see ``trialbook.assignment``): no draft, no
    override unit id and no targeting value in clear."""

    config_version: Literal[2] = PField(description="2: overrides and match values are hashed")
    hash_version: Literal[1]
    layers: dict[str, ConfigLayer]
    experiments: dict[str, ConfigExperiment]


# ------------------------------------------------------------------------------------------ OFREP
# Shapes of the OpenFeature Remote Evaluation Protocol (open-feature/protocol service/openapi.yaml).


class OfrepEvaluationRequest(BaseModel):
    """``{context: {targetingKey, ...attributes}}``."""

    context: dict[str, Any] | None = PField(
        default=None, description="`targetingKey` is the unit id; other fields are attributes"
    )


class OfrepEvaluationSuccess(BaseModel):
    key: str
    value: str = PField(description="the variant key")
    reason: Literal["SPLIT", "TARGETING_MATCH", "DEFAULT", "DISABLED"]
    variant: str
    metadata: dict[str, bool | int | float | str]


class OfrepEvaluationFailure(BaseModel):
    key: str
    errorCode: Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str


class OfrepFlagNotFound(BaseModel):
    key: str
    errorCode: Literal["FLAG_NOT_FOUND"]
    errorDetails: str


class OfrepBulkSuccess(BaseModel):
    flags: list[OfrepEvaluationSuccess | OfrepEvaluationFailure]


class OfrepBulkFailure(BaseModel):
    errorCode: Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str


class OfrepGeneralError(BaseModel):
    errorDetails: str


class OfrepConfiguration(BaseModel):
    name: str
    capabilities: dict[str, Any]
