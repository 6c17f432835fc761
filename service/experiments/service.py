"""Experiment registry rules: protocol validation, lifecycle, phases, layers and the audit trail."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, func
from sqlmodel import Session, col, select
from trialbook.targeting import validate_condition

from service.db import utcnow
from service.deps import Principal
from service.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    ValidationFailedError,
    validation_field_errors,
)
from service.experiments.models import (
    AnalysisSettings,
    AuditEntry,
    AuditEntryOut,
    Baseline,
    BaselineOut,
    ConcludeIn,
    Experiment,
    ExperimentCreate,
    ExperimentList,
    ExperimentMetric,
    ExperimentPhase,
    ExperimentPublic,
    ExperimentUpdate,
    Layer,
    LayerCreate,
    LayerExperimentOut,
    LayerPublic,
    LayerUpdate,
    MetricKey,
    PhaseCreate,
    PhaseOut,
    ProtocolWarning,
    Status,
    Targeting,
    VariantIn,
)
from service.metrics.models import Metric
from service.warehouse.models import data_source_problem
from stats.power import planned_duration_days, sample_size_per_variant

WEIGHT_TOLERANCE = 1e-6
# The largest plan a protocol may hold: units per variant (the column is a 32-bit integer on
# PostgreSQL; 1e9 is more than every person online in one arm) and days (ten years).
MAX_SAMPLE_SIZE = 1_000_000_000
MAX_PLANNED_DAYS = 3650
DEFAULT_LAYER_ALLOCATION = 0.5

# Fields that can change at any time, even after start: they do not alter the analysis.
ALWAYS_EDITABLE = frozenset({"title", "description", "owner", "tags", "overrides"})
# Fields that may change while running/paused without a new phase (ramping traffic up keeps
# every unit that was already in, in the same variant; see trialbook.hashing).
LIVE_EDITABLE = frozenset({"traffic_fraction", "expected_daily_units"})

# lifecycle: action -> (allowed from, to)
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "start": (frozenset({Status.draft}), Status.running),
    "pause": (frozenset({Status.running}), Status.paused),
    "resume": (frozenset({Status.paused}), Status.running),
    "stop": (frozenset({Status.running, Status.paused}), Status.stopped),
    "conclude": (frozenset({Status.stopped}), Status.concluded),
    "archive": (frozenset({Status.draft}), Status.archived),
}

# Hooks other domains register (templates check start, webhooks hear transitions).
StartCheck = Callable[[Session, Experiment, Principal], None]
TransitionListener = Callable[[Session, Experiment, str, str, str], None]
start_checks: list[StartCheck] = []
transition_listeners: list[TransitionListener] = []


# ------------------------------------------------------------------------------------- lookups


def get_row(session: Session, key: str) -> Experiment:
    row = session.exec(select(Experiment).where(Experiment.key == key)).first()
    if row is None:
        raise NotFoundError(f"No experiment with key '{key}'.")
    return row


def control_of(variants: list[dict[str, Any]]) -> str:
    return str(next(v["key"] for v in variants if v.get("is_control")))


def phases_of(session: Session, exp: Experiment) -> list[ExperimentPhase]:
    return list(
        session.exec(
            select(ExperimentPhase)
            .where(ExperimentPhase.experiment_id == exp.id)
            .order_by(col(ExperimentPhase.phase))
        ).all()
    )


def current_phase(session: Session, exp: Experiment) -> ExperimentPhase | None:
    return session.exec(
        select(ExperimentPhase).where(
            ExperimentPhase.experiment_id == exp.id, ExperimentPhase.phase == exp.phase
        )
    ).first()


def to_public(session: Session, exp: Experiment) -> ExperimentPublic:
    phases = [PhaseOut.model_validate(p, from_attributes=True) for p in phases_of(session, exp)]
    return ExperimentPublic.model_validate(
        {
            **exp.model_dump(),
            "primary_metric": {"metric": exp.primary_metric, "mde": exp.primary_mde},
            "phases": phases,
            "warnings": plan_warnings(exp),
        }
    )


# ----------------------------------------------------------------------------------- validation


def _variant_errors(variants: list[VariantIn], field: str = "variants") -> list[FieldError]:
    errors: list[FieldError] = []
    keys = [v.key for v in variants]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        errors.append(
            FieldError(field=field, message=f"variant keys must be unique; repeated: {dupes}")
        )
    controls = [v.key for v in variants if v.is_control]
    if len(controls) != 1:
        errors.append(
            FieldError(
                field=field,
                message=f"exactly one variant must have is_control true; found {len(controls)}"
                + (f" ({', '.join(controls)})" if controls else ""),
            )
        )
    total = sum(v.weight for v in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        errors.append(
            FieldError(
                field=field,
                message=f"weights sum to {total:.6g}; they must sum to 1 (±1e-6)",
            )
        )
    return errors


_T = TypeVar("_T")
_VARIANT = TypeAdapter(VariantIn)
_BASELINE = TypeAdapter(Baseline)
_METRIC_KEY: TypeAdapter[str] = TypeAdapter(MetricKey)
_TARGETING: TypeAdapter[dict[str, Any]] = TypeAdapter(Targeting)


def _lenient(adapter: TypeAdapter[_T], value: Any) -> _T | None:
    """``value`` parsed, or None when its own field rules fail (they report it already)."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _metric_names(data: Mapping[str, Any]) -> tuple[str | None, list[str], list[str]]:
    """The metric keys a protocol as sent names: primary, secondary and guardrails (by index;
    a name that is not even a key is left as "" so that indices stay those of the request)."""

    def key(value: Any) -> str:
        return _lenient(_METRIC_KEY, value) or ""

    primary_in = data.get("primary_metric")
    primary = key(primary_in.get("metric")) if isinstance(primary_in, dict) else ""
    secondary_in = data.get("secondary_metrics")
    secondary = [key(k) for k in secondary_in] if isinstance(secondary_in, list) else []
    guards_in = data.get("guardrails")
    guards = (
        [key(g.get("metric")) if isinstance(g, dict) else "" for g in guards_in]
        if isinstance(guards_in, list)
        else []
    )
    return primary or None, secondary, guards


def _metric_errors(
    session: Session, primary: str | None, secondary: list[str], guardrails: list[str]
) -> tuple[list[FieldError], dict[str, Metric]]:
    errors: list[FieldError] = []
    wanted = [k for k in [primary, *secondary, *guardrails] if k]
    found = {
        m.key: m for m in session.exec(select(Metric).where(col(Metric.key).in_(wanted))).all()
    }

    def unknown(field: str, key: str | None) -> None:
        if key and key not in found:
            errors.append(
                FieldError(
                    field=field,
                    message=f"no metric '{key}' in the catalogue; create it first with "
                    "POST /v1/metrics (GET /v1/metrics lists the keys)",
                    type="unknown_metric",
                )
            )

    unknown("primary_metric.metric", primary)
    for i, key in enumerate(secondary):
        unknown(f"secondary_metrics.{i}", key)
    for i, key in enumerate(guardrails):
        unknown(f"guardrails.{i}.metric", key)
    named_secondary = [k for k in secondary if k]
    if len(set(named_secondary)) != len(named_secondary):
        errors.append(FieldError(field="secondary_metrics", message="metric keys repeat"))
    if primary is not None and primary in named_secondary:
        errors.append(
            FieldError(
                field="secondary_metrics",
                message=f"'{primary}' is the primary metric; drop it from secondary_metrics",
            )
        )
    guard_keys = [k for k in guardrails if k]
    if len(set(guard_keys)) != len(guard_keys):
        errors.append(FieldError(field="guardrails", message="a metric is guarded twice"))
    overlap = sorted(set(guard_keys) & ({primary} | set(named_secondary)))
    if overlap:
        errors.append(
            FieldError(
                field="guardrails",
                message=f"{overlap} are already primary or secondary; a metric has one role",
            )
        )
    return errors, found


def _baseline_errors(metric: Metric | None, baseline: Baseline | None) -> list[FieldError]:
    if metric is None or baseline is None:
        return []
    if metric.type == "binomial":
        if baseline.rate is None:
            return [
                FieldError(
                    field="baseline.rate",
                    message="the primary metric is binomial: give the baseline `rate` in (0, 1)",
                )
            ]
        if baseline.mean is not None or baseline.sd is not None:
            return [FieldError(field="baseline", message="a binomial baseline takes `rate` only")]
        return []
    errors = []
    if baseline.mean is None or baseline.mean == 0:
        errors.append(
            FieldError(
                field="baseline.mean",
                message=f"the primary metric is {metric.type}: give a non-zero baseline `mean`",
            )
        )
    if baseline.sd is None:
        errors.append(
            FieldError(
                field="baseline.sd",
                message=f"the primary metric is {metric.type}: give the baseline `sd` > 0",
            )
        )
    if baseline.rate is not None:
        errors.append(
            FieldError(field="baseline.rate", message="`rate` is only for binomial metrics")
        )
    return errors


def protocol_problems(
    session: Session, data: Mapping[str, Any]
) -> tuple[list[FieldError], dict[str, Metric]]:
    """Every cross-field and referential rule of product.md §2 on a protocol *as sent*.

    ``data`` is the request's JSON (merged over the stored protocol for an update); its parts
    are parsed leniently, so that the rules run even when other fields break their own rules
    and one 422 can name every problem. A rule whose inputs fail their field rules is skipped:
    the field rule reports them. Returns the problems and the metrics found by key.
    """
    errors: list[FieldError] = []
    raw_variants = data.get("variants")
    variant_keys: set[str] = set()
    if isinstance(raw_variants, list):
        variant_keys = {
            v["key"] for v in raw_variants if isinstance(v, dict) and isinstance(v.get("key"), str)
        }
        parsed = [_lenient(_VARIANT, v) for v in raw_variants]
        if len(parsed) >= 2 and all(v is not None for v in parsed):
            errors += _variant_errors([v for v in parsed if v is not None])
    primary, secondary, guards = _metric_names(data)
    metric_errors, metrics = _metric_errors(session, primary, secondary, guards)
    errors += metric_errors
    if data.get("baseline") is not None and primary is not None:
        errors += _baseline_errors(metrics.get(primary), _lenient(_BASELINE, data["baseline"]))
    overrides = data.get("overrides")
    if isinstance(overrides, dict) and variant_keys:
        for unit, variant in overrides.items():
            if isinstance(variant, str) and variant not in variant_keys:
                errors.append(
                    FieldError(
                        field=f"overrides.{unit}",
                        message=f"'{variant}' is not a variant of this experiment; use one of "
                        f"{sorted(variant_keys)}",
                    )
                )
    targeting = data.get("targeting")
    if isinstance(targeting, dict) and _lenient(_TARGETING, targeting) is not None:
        for msg in validate_condition(targeting, "targeting"):
            path, _, what = msg.partition(": ")
            errors.append(FieldError(field=path.replace("$.", ""), message=what or msg))
    a = data.get("analysis")
    if isinstance(a, dict) and (a.get("prior_mean") is None) != (a.get("prior_sd") is None):
        errors.append(
            FieldError(
                field="analysis.prior_sd" if a.get("prior_sd") is None else "analysis.prior_mean",
                message="a normal prior needs prior_mean and prior_sd (or neither: flat prior)",
            )
        )
    layer = data.get("layer")
    if isinstance(layer, str):
        if session.exec(select(Layer.id).where(Layer.key == layer)).first() is None:
            errors.append(
                FieldError(
                    field="layer",
                    message=f"no layer '{layer}'; create it first with POST /v1/layers "
                    "(GET /v1/layers lists them)",
                    type="unknown_layer",
                )
            )
    elif data.get("layer_allocation") is not None:
        errors.append(
            FieldError(field="layer_allocation", message="layer_allocation needs a `layer`")
        )
    source = data.get("data_source")
    if isinstance(source, str) and (message := data_source_problem(session, source)):
        errors.append(FieldError(field="data_source", message=message, type="unknown_data_source"))
    return errors, metrics


def raise_problems(errors: list[FieldError]) -> None:
    """One 422 naming every problem (nothing when there is none)."""
    if errors:
        raise ValidationFailedError(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        )


def validate_protocol(session: Session, p: ExperimentCreate) -> dict[str, Metric]:
    """Check every cross-field rule of product.md §2; raise one 422 naming every bad field."""
    errors, metrics = protocol_problems(session, p.model_dump(mode="json"))
    raise_problems(errors)
    return metrics


def body_problems(
    session: Session, action: str, path_params: Mapping[str, Any], body: Any
) -> list[FieldError]:
    """The cross-field problems of a body (create, update, phase, conclude) that failed its field
    rules.

    The routes add them to the field rules' 422, so that one response names every problem.
    """
    if not isinstance(body, dict):
        return []
    if action == "create":
        errors, _ = protocol_problems(session, body)
        return errors + _template_problems(session, body.get("template"))
    if action == "phase":
        # A new phase's variants follow the protocol's variant rules.
        return protocol_problems(session, {"variants": body.get("variants")})[0]
    exp = session.exec(select(Experiment).where(Experiment.key == path_params.get("key"))).first()
    if exp is None:
        return []
    if action == "conclude":
        keys = [v["key"] for v in exp.variants]
        return conclusion_errors(body.get("decision"), body.get("variant"), keys)
    current = _protocol_of(exp)
    merged = current | body
    if isinstance(body.get("analysis"), dict):
        merged["analysis"] = dict(current.get("analysis") or {}) | body["analysis"]
    errors, _ = protocol_problems(session, merged)
    return errors


def conclusion_errors(decision: Any, variant: Any, variant_keys: list[str]) -> list[FieldError]:
    """A `ship` decision names one of the experiment's variants; the others name none."""
    if decision == "ship":
        if variant is None:
            return [
                FieldError(
                    field="variant",
                    message=f"a `ship` decision names the variant shipped: one of {variant_keys}",
                )
            ]
        if isinstance(variant, str) and variant not in variant_keys:
            return [
                FieldError(
                    field="variant",
                    message=f"'{variant}' is not a variant; use one of {variant_keys}",
                )
            ]
    elif decision in ("roll_back", "inconclusive") and variant is not None:
        return [
            FieldError(field="variant", message="only a `ship` decision names a variant; remove it")
        ]
    return []


def _template_problems(session: Session, template: Any) -> list[FieldError]:
    if not isinstance(template, str) or not template:
        return []
    from service.templates.service import resolve_template  # the templates domain's rule

    try:
        resolve_template(session, template)
    except ValidationFailedError as exc:
        return list(exc.errors or [])
    except NotFoundError:
        return []
    return []


def _weights_control_first(exp: Experiment) -> list[float]:
    ordered = sorted(exp.variants, key=lambda v: not v.get("is_control"))
    return [float(v["weight"]) for v in ordered]


def sample_size_for(exp: Experiment, metric_type: str, baseline: Baseline) -> int:
    """Units per variant the protocol needs for its primary metric, from a baseline.

    Raises ``ValueError`` when the baseline cannot support the plan (see ``stats.power``).
    """
    return sample_size_per_variant(
        metric_type=metric_type,  # type: ignore[arg-type]
        mde=exp.primary_mde,
        alpha=exp.alpha,
        power=exp.power,
        baseline_rate=baseline.rate,
        baseline_mean=baseline.mean,
        baseline_sd=baseline.sd,
        weights=_weights_control_first(exp),
    )


def compute_plan(exp: Experiment, primary: Metric | None) -> tuple[int | None, int | None]:
    """Sample size per variant and planned duration from the protocol (None when unknown).

    Raises a 422 when the engine cannot plan it, or when the plan is beyond any real
    experiment (more than ``MAX_SAMPLE_SIZE`` units per variant, or ``MAX_PLANNED_DAYS``).
    """
    if primary is None or exp.baseline is None:
        return None, None
    baseline = BaselineOut.model_validate(exp.baseline)
    try:
        n = sample_size_per_variant(
            metric_type=primary.type,  # type: ignore[arg-type]
            mde=exp.primary_mde,
            alpha=exp.alpha,
            power=exp.power,
            baseline_rate=baseline.rate,
            baseline_mean=baseline.mean,
            baseline_sd=baseline.sd,
            weights=_weights_control_first(exp),
        )
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise ValidationFailedError.on(
            "primary_metric.mde", f"the plan cannot be computed: {exc}"
        ) from exc
    if n > MAX_SAMPLE_SIZE:
        raise ValidationFailedError.on(
            "primary_metric.mde",
            f"detecting a {exp.primary_mde:g} relative effect needs {n:.3g} units per variant, "
            f"more than the {MAX_SAMPLE_SIZE:.0e} a plan can hold: raise the mde, or give the "
            "baseline of a more frequent metric",
        )
    days = None
    if exp.expected_daily_units is not None:
        try:
            days = planned_duration_days(
                sample_size_per_variant=n,
                weights=_weights_control_first(exp),
                traffic_fraction=exp.traffic_fraction,
                expected_daily_units=exp.expected_daily_units,
            )
        except (ValueError, OverflowError) as exc:
            raise ValidationFailedError.on(
                "expected_daily_units", f"the planned duration cannot be computed: {exc}"
            ) from exc
        if days > MAX_PLANNED_DAYS:
            raise ValidationFailedError.on(
                "expected_daily_units",
                f"the plan takes {days} days, more than {MAX_PLANNED_DAYS} (ten years): raise "
                "expected_daily_units or traffic_fraction, or a larger mde needs fewer units",
            )
    return n, days


def _plan_into(
    exp: Experiment, primary: Metric | None, problems: list[FieldError]
) -> list[FieldError]:
    """Set the row's plan; its 422 as errors to report with the others. A protocol whose other
    rules fail is not planned (a plan from an inconsistent protocol would only add noise)."""
    if problems:
        return []
    try:
        exp.sample_size_per_variant, exp.planned_duration_days = compute_plan(exp, primary)
    except ValidationFailedError as exc:
        return list(exc.errors or [])
    return []


def plan_warnings(exp: Experiment) -> list[ProtocolWarning]:
    """What the protocol leaves open: shown with it, so that a null is never silent."""
    if exp.baseline is None:
        return [
            ProtocolWarning(
                code="no_baseline",
                message="the protocol has no `baseline` for its primary metric, so "
                "sample_size_per_variant and planned_duration_days are null: the results "
                "estimate the sample size from the control's data once it arrives "
                "(`sample_size_estimated`), or PATCH a baseline now (`rate` for a binomial "
                "metric, `mean` and `sd` otherwise) to plan before start",
            )
        ]
    if exp.sample_size_per_variant is not None and exp.expected_daily_units is None:
        return [
            ProtocolWarning(
                code="no_expected_daily_units",
                message="planned_duration_days is null: give `expected_daily_units` (units "
                "entering the experiment a day) to plan the duration",
            )
        ]
    return []


# ---------------------------------------------------------------------------------- audit trail


def audit(
    session: Session,
    exp: Experiment,
    actor: str,
    action: str,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    assert exp.id is not None
    session.add(
        AuditEntry(
            experiment_id=exp.id,
            actor=actor,
            action=action,
            from_status=from_status,
            to_status=to_status,
            note=note,
            details=details,
        )
    )


def list_audit(session: Session, key: str) -> list[AuditEntryOut]:
    exp = get_row(session, key)
    rows = session.exec(
        select(AuditEntry).where(AuditEntry.experiment_id == exp.id).order_by(col(AuditEntry.id))
    ).all()
    return [AuditEntryOut.model_validate(r, from_attributes=True) for r in rows]


# ----------------------------------------------------------------------------------- registry


def _sync_metric_links(session: Session, exp: Experiment) -> None:
    assert exp.id is not None
    session.exec(delete(ExperimentMetric).where(col(ExperimentMetric.experiment_id) == exp.id))
    session.add(
        ExperimentMetric(experiment_id=exp.id, metric_key=exp.primary_metric, role="primary")
    )
    for key in exp.secondary_metrics:
        session.add(ExperimentMetric(experiment_id=exp.id, metric_key=key, role="secondary"))
    for g in exp.guardrails:
        session.add(
            ExperimentMetric(experiment_id=exp.id, metric_key=g["metric"], role="guardrail")
        )


def _apply_protocol(exp: Experiment, p: ExperimentCreate) -> None:
    data = p.model_dump(mode="json", exclude={"key", "template", "primary_metric"})
    for field, value in data.items():
        setattr(exp, field, value)
    exp.primary_metric = p.primary_metric.metric
    exp.primary_mde = p.primary_metric.mde


ProtocolHook = Callable[
    [Session, ExperimentCreate, Principal], tuple[ExperimentCreate, str | None, int | None]
]
# Templates register here: (session, protocol, who) -> (protocol with defaults, template, version)
protocol_hooks: list[ProtocolHook] = []
# Called by update_experiment with (session, stored row before the change, merged protocol, names
# of the fields whose value changes, who), before anything is written. A hook raises (422) to
# refuse the update, may change the row (templates clear an approval), and returns a note for the
# update's audit entry, or None.
UpdateHook = Callable[
    [Session, Experiment, ExperimentCreate, frozenset[str], Principal], str | None
]
update_hooks: list[UpdateHook] = []
# Called by new_phase with (session, row, who) before anything is written. A hook may change the
# row (templates clear an approval) and returns why the new phase must wait, or None: a phase
# that waits starts paused and runs once resumed, when every start check passes again.
PhaseHook = Callable[[Session, Experiment, Principal], str | None]
phase_hooks: list[PhaseHook] = []


def create_experiment(session: Session, body: ExperimentCreate, who: Principal) -> ExperimentPublic:
    if session.exec(select(Experiment.id).where(Experiment.key == body.key)).first() is not None:
        raise ConflictError(
            f"An experiment with key '{body.key}' already exists; keys are unique and immutable.",
            code="duplicate_key",
        )
    template, template_version = None, None
    errors: list[FieldError] = []
    try:
        for hook in protocol_hooks:
            body, template, template_version = hook(session, body, who)
    except ValidationFailedError as exc:  # the template's rules: reported with the protocol's
        errors += exc.errors or [FieldError(field="body", message=exc.detail)]
    problems, metrics = protocol_problems(session, body.model_dump(mode="json"))
    errors += problems
    exp = Experiment(
        key=body.key,
        seed=secrets.token_hex(8),
        created_by=who.actor,
        template=template,
        template_version=template_version,
        hypothesis="",
        variants=[],
        primary_metric="",
        primary_mde=1.0,
        analysis={},
        title="",
        owner="",
    )
    _apply_protocol(exp, body)
    errors += _plan_into(exp, metrics.get(body.primary_metric.metric), problems)
    raise_problems(errors)
    session.add(exp)
    session.flush()
    assert exp.id is not None
    session.add(
        ExperimentPhase(
            experiment_id=exp.id,
            phase=1,
            variants=exp.variants,
            traffic_fraction=exp.traffic_fraction,
            reason="initial protocol",
        )
    )
    _sync_metric_links(session, exp)
    audit(session, exp, who.actor, "create", to_status=Status.draft.value)
    session.commit()
    return to_public(session, exp)


def list_experiments(
    session: Session,
    *,
    status: Status | None,
    owner: str | None,
    limit: int,
    offset: int,
) -> ExperimentList:
    query = select(Experiment)
    count = select(func.count()).select_from(Experiment)
    if status is not None:
        query = query.where(Experiment.status == status.value)
        count = count.where(Experiment.status == status.value)
    if owner is not None:
        query = query.where(Experiment.owner == owner)
        count = count.where(Experiment.owner == owner)
    total = session.exec(count).one()
    rows = session.exec(
        query.order_by(col(Experiment.created_at).desc(), col(Experiment.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return ExperimentList(
        items=[to_public(session, r) for r in rows], total=total, limit=limit, offset=offset
    )


def _protocol_of(exp: Experiment) -> dict[str, Any]:
    pub = ExperimentCreate.model_fields.keys()
    data = {k: getattr(exp, k) for k in pub if k not in ("primary_metric", "template")}
    data["primary_metric"] = {"metric": exp.primary_metric, "mde": exp.primary_mde}
    return data


def _normal_form(data: dict[str, Any]) -> dict[str, Any]:
    """A stored protocol as the schema dumps it (defaults filled in), to compare with a new one."""
    try:
        return ExperimentCreate.model_validate(data).model_dump(mode="json")
    except ValueError:  # a row written under an older schema: compare it as stored
        return data


def update_experiment(
    session: Session, key: str, body: ExperimentUpdate, who: Principal
) -> ExperimentPublic:
    exp = get_row(session, key)
    changes = body.model_dump(mode="json", exclude_unset=True)
    nulls = [
        k
        for k, v in changes.items()
        if v is None
        and k
        not in (
            "description",
            "targeting",
            "baseline",
            "expected_daily_units",
            "attribution_window_hours",
            "layer",
            "layer_allocation",
        )
    ]
    if nulls:
        raise ValidationFailedError(
            "these fields cannot be null: " + ", ".join(nulls),
            errors=[
                FieldError(field=k, message="cannot be null; omit it to keep the value")
                for k in nulls
            ],
        )
    current = _protocol_of(exp)
    if isinstance(changes.get("analysis"), dict):
        # A merge patch (RFC 7396): analysis settings the request leaves out keep their stored
        # value (a template default, say) instead of falling back to the schema default.
        changes["analysis"] = dict(current.get("analysis") or {}) | changes["analysis"]
    status = Status(exp.status)
    if status is not Status.draft:
        editable = ALWAYS_EDITABLE | (
            LIVE_EDITABLE if status in (Status.running, Status.paused) else frozenset()
        )
        frozen = sorted(k for k, v in changes.items() if k not in editable and current.get(k) != v)
        if frozen:
            hint = (
                " New variants or weights go through POST /v1/experiments/{key}/phases."
                if "variants" in frozen
                else ""
            )
            raise ConflictError(
                "The protocol is frozen once the experiment leaves draft (status "
                f"'{status.value}'); these fields cannot change: {', '.join(frozen)}.{hint}",
                code="protocol_frozen",
                errors=[FieldError(field=k, message="frozen after start") for k in frozen],
            )
    merged = current | changes
    merged["key"] = exp.key
    try:
        protocol = ExperimentCreate.model_validate(merged)
    except ValidationError as exc:
        # The update breaks the rules in combination with what is stored: say which, with the
        # cross-field problems, in one 422.
        problems, _ = protocol_problems(session, merged)
        raise_problems(validation_field_errors(exc.errors()) + problems)
        raise  # unreachable: a failed validation lists at least one error
    before = {k: v for k, v in current.items() if k in changes}
    # Compared in normal form: re-sending a variant without its null `name` is no change (and so
    # does not, for instance, clear an approval).
    stored = _normal_form(current | {"key": exp.key})
    proposed = protocol.model_dump(mode="json")
    changed = sorted(k for k in changes if stored.get(k) != proposed.get(k))
    approved_before = exp.approved_by
    errors: list[FieldError] = []
    hook_notes: list[str] = []
    try:
        for hook in update_hooks:
            if (note := hook(session, exp, protocol, frozenset(changed), who)) is not None:
                hook_notes.append(note)
    except ValidationFailedError as exc:  # the template's rules: reported with the protocol's
        errors += exc.errors or [FieldError(field="body", message=exc.detail)]
    if "overrides" in changes and status is not Status.draft:
        variant_keys = {v["key"] for v in exp.variants}
        bad = {u: v for u, v in protocol.overrides.items() if v not in variant_keys}
        if bad:
            raise ValidationFailedError(
                "overrides name unknown variants",
                errors=[
                    FieldError(field=f"overrides.{u}", message=f"'{v}' is not a variant")
                    for u, v in bad.items()
                ],
            )
    problems, metrics = protocol_problems(session, protocol.model_dump(mode="json"))
    raise_problems(errors + problems)  # before the row changes: nothing to undo
    _apply_protocol(exp, protocol)
    raise_problems(_plan_into(exp, metrics.get(protocol.primary_metric.metric), problems))
    exp.updated_at = utcnow()
    if status is Status.draft:
        phase = current_phase(session, exp)
        if phase is not None:
            phase.variants = exp.variants
            phase.traffic_fraction = exp.traffic_fraction
            session.add(phase)
    elif "traffic_fraction" in changes:
        phase = current_phase(session, exp)
        if phase is not None:
            phase.traffic_fraction = exp.traffic_fraction
            session.add(phase)
    session.add(exp)
    _sync_metric_links(session, exp)
    if changed:
        details: dict[str, Any] = {
            "fields": changed,
            "before": {k: before.get(k) for k in changed},
        }
        if approved_before is not None and exp.approved_by is None:
            details["approval_cleared"] = approved_before
        audit(
            session,
            exp,
            who.actor,
            "update",
            note="; ".join(hook_notes) or None,
            details=details,
        )
    session.commit()
    return to_public(session, exp)


# ------------------------------------------------------------------------------------ lifecycle


def _allocate_layer_range(session: Session, exp: Experiment) -> list[float] | None:
    if exp.layer is None:
        return None
    layer = session.exec(select(Layer).where(Layer.key == exp.layer)).first()
    if layer is None:
        raise ConflictError(f"The layer '{exp.layer}' no longer exists.", code="layer_missing")
    live = session.exec(
        select(Experiment).where(
            Experiment.layer == exp.layer,
            col(Experiment.status).in_([Status.running.value, Status.paused.value]),
            Experiment.id != exp.id,
        )
    ).all()
    taken = sorted(tuple(e.layer_range) for e in live if e.layer_range)
    lo_bound = layer.holdout_fraction
    width = (exp.layer_allocation or DEFAULT_LAYER_ALLOCATION) * (1.0 - lo_bound)
    cursor = lo_bound
    for lo, hi in [*taken, (1.0, 1.0)]:
        if lo - cursor >= width - 1e-12:
            return [round(cursor, 12), round(cursor + width, 12)]
        cursor = max(cursor, hi)
    raise ConflictError(
        f"Layer '{exp.layer}' has no free slice of {width:.4g} of its hash space: "
        f"running experiments hold {taken}. Stop one or lower layer_allocation.",
        code="layer_full",
    )


def transition(
    session: Session,
    key: str,
    action: str,
    who: Principal,
    *,
    note: str | None = None,
    conclusion: ConcludeIn | None = None,
) -> ExperimentPublic:
    exp = get_row(session, key)
    allowed, target = TRANSITIONS[action]
    status = Status(exp.status)
    if status not in allowed:
        raise ConflictError(
            f"Cannot {action} an experiment that is '{status.value}'; {action} needs status "
            f"{' or '.join(sorted(s.value for s in allowed))}.",
            code="illegal_transition",
        )
    now = utcnow()
    details: dict[str, Any] | None = None
    if action in ("start", "resume"):
        # A resume runs the checks again: a new phase may be waiting for an approval.
        for check in start_checks:
            check(session, exp, who)
    if action == "start":
        exp.layer_range = _allocate_layer_range(session, exp)
        exp.started_at = now
        phase = current_phase(session, exp)
        if phase is not None:
            phase.started_at = now
            session.add(phase)
        if exp.layer_range is not None:
            details = {"layer_range": exp.layer_range}
    elif action == "resume":
        phase = current_phase(session, exp)
        if phase is not None and phase.started_at is None:  # a new phase that waited
            phase.started_at = now
            session.add(phase)
    elif action == "stop":
        exp.stopped_at = now
        phase = current_phase(session, exp)
        if phase is not None:
            phase.ended_at = now
            session.add(phase)
    elif action == "conclude":
        assert conclusion is not None
        raise_problems(
            conclusion_errors(
                conclusion.decision, conclusion.variant, [v["key"] for v in exp.variants]
            )
        )
        exp.decision = {
            "decision": conclusion.decision,
            "variant": conclusion.variant,
            "rationale": conclusion.rationale,
            "decided_by": who.actor,
            "decided_at": now.isoformat(),
        }
        exp.concluded_at = now
        note = conclusion.rationale
        details = {"decision": conclusion.decision, "variant": conclusion.variant}
    exp.status = target.value
    exp.updated_at = now
    session.add(exp)
    audit(
        session,
        exp,
        who.actor,
        action,
        from_status=status.value,
        to_status=target.value,
        note=note,
        details=details,
    )
    for listener in transition_listeners:
        listener(session, exp, action, status.value, target.value)
    session.commit()
    return to_public(session, exp)


def new_phase(session: Session, key: str, body: PhaseCreate, who: Principal) -> ExperimentPublic:
    exp = get_row(session, key)
    status = Status(exp.status)
    if status not in (Status.running, Status.paused):
        raise ConflictError(
            f"A new phase starts only for a running or paused experiment (status "
            f"'{status.value}'); in draft, PATCH the variants instead.",
            code="illegal_transition",
        )
    if body.variants is None and body.traffic_fraction is None:
        raise ValidationFailedError.on("variants", "give new `variants` and/or `traffic_fraction`")
    variants = exp.variants
    if body.variants is not None:
        errors = _variant_errors(body.variants)
        if errors:
            raise ValidationFailedError("; ".join(e.message for e in errors), errors=errors)
        variants = [v.model_dump(mode="json") for v in body.variants]
        removed = sorted(set(exp.overrides.values()) - {v["key"] for v in variants})
        if removed:
            raise ConflictError(
                f"overrides point at variants the new phase drops ({removed}); PATCH them first",
                code="override_variant_removed",
            )
    waits = [why for hook in phase_hooks if (why := hook(session, exp, who)) is not None]
    now = utcnow()
    old = current_phase(session, exp)
    if old is not None:
        old.ended_at = now
        session.add(old)
    assert exp.id is not None
    exp.phase += 1
    if waits:
        exp.status = Status.paused.value
    exp.variants = variants
    if body.traffic_fraction is not None:
        exp.traffic_fraction = body.traffic_fraction
    exp.updated_at = now
    session.add(
        ExperimentPhase(
            experiment_id=exp.id,
            phase=exp.phase,
            variants=variants,
            traffic_fraction=exp.traffic_fraction,
            reason=body.reason,
            started_at=None if waits else now,
        )
    )
    primary = session.exec(select(Metric).where(Metric.key == exp.primary_metric)).first()
    exp.sample_size_per_variant, exp.planned_duration_days = compute_plan(exp, primary)
    session.add(exp)
    audit(
        session,
        exp,
        who.actor,
        "new_phase",
        from_status=status.value if exp.status != status.value else None,
        to_status=exp.status if exp.status != status.value else None,
        note="; ".join([body.reason, *waits]),
        details={
            "phase": exp.phase,
            "variants": variants,
            "traffic_fraction": exp.traffic_fraction,
        },
    )
    if exp.status != status.value:
        for listener in transition_listeners:
            listener(session, exp, "pause", status.value, exp.status)
    session.commit()
    return to_public(session, exp)


def add_note(session: Session, key: str, text: str, who: Principal) -> ExperimentPublic:
    exp = get_row(session, key)
    exp.notes = [*exp.notes, {"at": utcnow().isoformat(), "by": who.actor, "text": text}]
    exp.updated_at = utcnow()
    session.add(exp)
    audit(session, exp, who.actor, "note", note=text)
    session.commit()
    return to_public(session, exp)


# --------------------------------------------------------------------------------------- layers


def _layer_public(session: Session, layer: Layer) -> LayerPublic:
    exps = session.exec(
        select(Experiment).where(Experiment.layer == layer.key).order_by(col(Experiment.key))
    ).all()
    return LayerPublic(
        key=layer.key,
        description=layer.description,
        holdout_fraction=layer.holdout_fraction,
        experiments=[
            LayerExperimentOut(key=e.key, status=Status(e.status), layer_range=e.layer_range)
            for e in exps
        ],
    )


def get_layer_row(session: Session, key: str) -> Layer:
    layer = session.exec(select(Layer).where(Layer.key == key)).first()
    if layer is None:
        raise NotFoundError(f"No layer with key '{key}'.")
    return layer


def create_layer(session: Session, body: LayerCreate) -> LayerPublic:
    if session.exec(select(Layer.id).where(Layer.key == body.key)).first() is not None:
        raise ConflictError(f"A layer with key '{body.key}' already exists.", code="duplicate_key")
    layer = Layer(**body.model_dump(), seed=secrets.token_hex(8))
    session.add(layer)
    session.commit()
    return _layer_public(session, layer)


def list_layers(session: Session) -> list[LayerPublic]:
    return [
        _layer_public(session, x)
        for x in session.exec(select(Layer).order_by(col(Layer.key))).all()
    ]


def update_layer(session: Session, key: str, body: LayerUpdate) -> LayerPublic:
    layer = get_layer_row(session, key)
    changes = body.model_dump(exclude_unset=True)
    if "holdout_fraction" in changes and changes["holdout_fraction"] != layer.holdout_fraction:
        if changes["holdout_fraction"] is None:
            raise ValidationFailedError.on("holdout_fraction", "give a number in [0, 1)")
        live = session.exec(
            select(Experiment.key).where(
                Experiment.layer == key,
                col(Experiment.status) != Status.draft.value,
                col(Experiment.status) != Status.archived.value,
            )
        ).all()
        if live:
            raise ConflictError(
                f"The holdout of layer '{key}' cannot change while experiments have used it "
                f"({', '.join(sorted(live))}): units would move between holdout and experiments.",
                code="layer_in_use",
            )
        layer.holdout_fraction = changes["holdout_fraction"]
    if "description" in changes:
        layer.description = changes["description"]
    session.add(layer)
    session.commit()
    return _layer_public(session, layer)


def analysis_settings(exp: Experiment) -> AnalysisSettings:
    """The stored analysis settings; a row stored under older, looser ranges is read as stored
    (its numbers were accepted then, and the analysis must not fail on them now)."""
    try:
        return AnalysisSettings.model_validate(exp.analysis)
    except ValidationError:
        return AnalysisSettings.model_construct(
            **(AnalysisSettings().model_dump() | dict(exp.analysis or {}))
        )


def started_at_of_phase(session: Session, exp: Experiment) -> datetime | None:
    phase = current_phase(session, exp)
    return phase.started_at if phase is not None else None
