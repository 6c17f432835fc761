"""Protocol validation: every cross-field rule of product.md §2, reported as field errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session, col, select
from trialbook.targeting import validate_condition

from service.errors import (
    FieldError,
    ValidationFailedError,
)
from service.experiments.hooks import data_source_checks, protocol_problem_hooks
from service.experiments.models import (
    Baseline,
    Experiment,
    ExperimentCreate,
    Layer,
    MetricKey,
    Targeting,
    VariantIn,
)
from service.metrics.models import Metric

WEIGHT_TOLERANCE = 1e-6
# The largest plan a protocol may hold: units per variant (the column is a 32-bit integer on
# PostgreSQL; 1e9 is more than every person online in one arm) and days (ten years).
MAX_SAMPLE_SIZE = 1_000_000_000
MAX_PLANNED_DAYS = 3650
DEFAULT_LAYER_ALLOCATION = 0.5


def variant_errors(variants: list[VariantIn], field: str = "variants") -> list[FieldError]:
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
            errors += variant_errors([v for v in parsed if v is not None])
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
    if isinstance(source, str):
        for check in data_source_checks:
            if message := check(session, source):
                errors.append(
                    FieldError(field="data_source", message=message, type="unknown_data_source")
                )
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
        for hook in protocol_problem_hooks:
            errors += hook(session, body)
        return errors
    if action == "phase":
        # A new phase's variants follow the protocol's variant rules.
        return protocol_problems(session, {"variants": body.get("variants")})[0]
    exp = session.exec(select(Experiment).where(Experiment.key == path_params.get("key"))).first()
    if exp is None:
        return []
    if action == "conclude":
        keys = [v["key"] for v in exp.variants]
        return conclusion_errors(body.get("decision"), body.get("variant"), keys)
    current = protocol_of(exp)
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


def protocol_of(exp: Experiment) -> dict[str, Any]:
    pub = ExperimentCreate.model_fields.keys()
    data = {k: getattr(exp, k) for k in pub if k not in ("primary_metric", "template")}
    data["primary_metric"] = {"metric": exp.primary_metric, "mde": exp.primary_mde}
    return data
