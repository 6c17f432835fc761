"""Template rules: versioned CRUD, defaults and rule checks at experiment creation, approval."""

from __future__ import annotations

import re
from typing import Any, cast

from sqlmodel import Session, col, select

from service.auth import Principal
from service.db import utcnow
from service.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    PermissionDeniedError,
    ValidationFailedError,
)
from service.experiments import service as experiments
from service.experiments.models import (
    AuditEntry,
    BaselineRow,
    Experiment,
    ExperimentCreate,
    ExperimentPublic,
    Status,
    StructuredHypothesis,
    variant_rows,
)
from service.experiments.plan import compute_plan
from service.keys.models import ApiKey, Role
from service.metrics.models import Metric
from service.metrics.service import unknown_metric_errors
from service.templates.models import (
    ProtocolTemplate,
    ProtocolTemplateVersion,
    TemplateCreate,
    TemplateDefaults,
    TemplatePublic,
    TemplateRules,
    TemplateUpdate,
)

# --------------------------------------------------------------------------------------- CRUD


def _public(tpl: ProtocolTemplate, ver: ProtocolTemplateVersion) -> TemplatePublic:
    return TemplatePublic(
        key=tpl.key,
        version=ver.version,
        latest_version=tpl.latest_version,
        is_default=tpl.is_default,
        name=ver.name,
        description=ver.description,
        defaults=TemplateDefaults.model_validate(ver.defaults),
        rules=TemplateRules.model_validate(ver.rules),
        created_by=ver.created_by,
        created_at=ver.created_at,
    )


def get_template_row(session: Session, key: str) -> ProtocolTemplate:
    row = session.exec(select(ProtocolTemplate).where(ProtocolTemplate.key == key)).first()
    if row is None:
        raise NotFoundError(f"No template with key '{key}'.")
    return row


def get_version_row(
    session: Session, tpl: ProtocolTemplate, version: int | None = None
) -> ProtocolTemplateVersion:
    wanted = tpl.latest_version if version is None else version
    row = session.exec(
        select(ProtocolTemplateVersion).where(
            ProtocolTemplateVersion.template_id == tpl.id,
            ProtocolTemplateVersion.version == wanted,
        )
    ).first()
    if row is None:
        raise NotFoundError(f"Template '{tpl.key}' has no version {wanted}.")
    return row


def _clear_default(session: Session, keep: ProtocolTemplate) -> None:
    for other in session.exec(
        select(ProtocolTemplate).where(
            col(ProtocolTemplate.is_default).is_(True), ProtocolTemplate.id != keep.id
        )
    ).all():
        other.is_default = False
        session.add(other)


def _add_version(
    session: Session,
    tpl: ProtocolTemplate,
    version: int,
    body: TemplateCreate | TemplateUpdate,
    who: Principal,
) -> ProtocolTemplateVersion:
    assert tpl.id is not None
    ver = ProtocolTemplateVersion(
        template_id=tpl.id,
        version=version,
        name=body.name,
        description=body.description,
        defaults=body.defaults.model_dump(mode="json", exclude_none=True),
        rules=body.rules.model_dump(mode="json"),
        created_by=who.actor,
    )
    session.add(ver)
    return ver


def _rules_metric_errors(session: Session, rules: TemplateRules) -> None:
    """A template's rules name metrics of the catalogue (422 naming each that is not)."""
    named = [
        (f"rules.required_guardrails.{i}.metric", g.metric)
        for i, g in enumerate(rules.required_guardrails)
    ] + [
        (f"rules.allowed_primary_metrics.{i}", key)
        for i, key in enumerate(rules.allowed_primary_metrics or [])
    ]
    errors = unknown_metric_errors(session, named)
    if errors:
        raise ValidationFailedError(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        )


def create_template(session: Session, body: TemplateCreate, who: Principal) -> TemplatePublic:
    """Create a template at version 1."""
    _rules_metric_errors(session, body.rules)
    if (
        session.exec(select(ProtocolTemplate.id).where(ProtocolTemplate.key == body.key)).first()
        is not None
    ):
        raise ConflictError(
            f"A template with key '{body.key}' already exists; PUT a new version instead.",
            code="duplicate_key",
        )
    tpl = ProtocolTemplate(key=body.key, is_default=body.is_default, latest_version=1)
    session.add(tpl)
    session.flush()
    if body.is_default:
        _clear_default(session, tpl)
    ver = _add_version(session, tpl, 1, body, who)
    session.commit()
    return _public(tpl, ver)


def update_template(
    session: Session, key: str, body: TemplateUpdate, who: Principal
) -> TemplatePublic:
    """Write a new version; experiments registered under older versions keep theirs."""
    tpl = get_template_row(session, key)
    _rules_metric_errors(session, body.rules)
    tpl.latest_version += 1
    if body.is_default is not None:
        tpl.is_default = body.is_default
        if body.is_default:
            _clear_default(session, tpl)
    session.add(tpl)
    ver = _add_version(session, tpl, tpl.latest_version, body, who)
    session.commit()
    return _public(tpl, ver)


def get_template(session: Session, key: str, version: int | None = None) -> TemplatePublic:
    tpl = get_template_row(session, key)
    return _public(tpl, get_version_row(session, tpl, version))


def list_templates(session: Session) -> list[TemplatePublic]:
    """The latest version of every template, by key."""
    out = []
    for tpl in session.exec(select(ProtocolTemplate).order_by(col(ProtocolTemplate.key))).all():
        out.append(_public(tpl, get_version_row(session, tpl)))
    return out


def list_versions(session: Session, key: str) -> list[TemplatePublic]:
    tpl = get_template_row(session, key)
    rows = session.exec(
        select(ProtocolTemplateVersion)
        .where(ProtocolTemplateVersion.template_id == tpl.id)
        .order_by(col(ProtocolTemplateVersion.version))
    ).all()
    return [_public(tpl, v) for v in rows]


# ------------------------------------------------------------------------- defaults and rules


def apply_defaults(body: ExperimentCreate, defaults: TemplateDefaults) -> ExperimentCreate:
    """Fill the fields the request did not set (``model_fields_set``) from the template."""
    update: dict[str, Any] = {}
    for name in ("alpha", "power", "attribution_window_hours"):
        value = getattr(defaults, name)
        if value is not None and name not in body.model_fields_set:
            update[name] = value
    given = body.analysis.model_fields_set if "analysis" in body.model_fields_set else set()
    analysis_update = {
        k: v for k, v in defaults.analysis.model_dump(exclude_none=True).items() if k not in given
    }
    if analysis_update:
        # model_validate keeps the result strict-checked and fields_set accurate.
        merged = body.analysis.model_dump() | analysis_update
        update["analysis"] = type(body.analysis).model_validate(merged)
    if not update:
        return body
    data = body.model_dump(exclude_unset=True) | {
        k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()
    }
    return ExperimentCreate.model_validate(data)


def _planned_days(session: Session, body: ExperimentCreate) -> int | None:
    metric = session.exec(select(Metric).where(Metric.key == body.primary_metric.metric)).first()
    probe = Experiment(
        key=body.key,
        title=body.title,
        owner=body.owner,
        hypothesis="",
        seed="",
        created_by="",
        variants=variant_rows(body.variants),
        traffic_fraction=body.traffic_fraction,
        primary_metric=body.primary_metric.metric,
        primary_mde=body.primary_metric.mde,
        alpha=body.alpha,
        power=body.power,
        baseline=cast(BaselineRow, body.baseline.model_dump(mode="json"))
        if body.baseline
        else None,
        expected_daily_units=body.expected_daily_units,
        analysis={},
    )
    try:
        _, days = compute_plan(probe, metric)
    except ValidationFailedError:
        return None  # the protocol's own validation reports the bad plan
    return days


def rule_errors(
    session: Session, body: ExperimentCreate, rules: TemplateRules, label: str
) -> list[FieldError]:
    """Every violated template rule, each message starting with the rule's name."""
    errors: list[FieldError] = []

    def fail(field: str, rule: str, message: str) -> None:
        errors.append(FieldError(field=field, message=f"template.{rule}: {message} ({label})"))

    guards = {g.metric: (i, g.margin) for i, g in enumerate(body.guardrails)}
    for req in rules.required_guardrails:
        if req.metric not in guards:
            fail(
                "guardrails",
                "required_guardrail",
                f"every experiment guards '{req.metric}' with margin ≤ {req.max_margin:g}; "
                f"add {{metric: '{req.metric}', margin: {req.max_margin:g}}}",
            )
        else:
            i, margin = guards[req.metric]
            if margin > req.max_margin:
                fail(
                    f"guardrails.{i}.margin",
                    "required_guardrail",
                    f"the margin on '{req.metric}' is {margin:g}; it may be at most "
                    f"{req.max_margin:g}",
                )
    allowed = rules.allowed_primary_metrics
    if allowed is not None and body.primary_metric.metric not in allowed:
        fail(
            "primary_metric.metric",
            "allowed_primary_metrics",
            f"'{body.primary_metric.metric}' is not an allowed primary metric; use one of "
            f"{sorted(allowed)}",
        )
    if rules.require_structured_hypothesis and not isinstance(
        body.hypothesis, StructuredHypothesis
    ):
        fail(
            "hypothesis",
            "structured_hypothesis",
            "give the hypothesis as {change, population, expected_outcome, rationale}",
        )
    cap = rules.max_secondary_metrics
    if cap is not None and len(body.secondary_metrics) > cap:
        fail(
            "secondary_metrics",
            "max_secondary_metrics",
            f"{len(body.secondary_metrics)} secondary metrics; at most {cap} are allowed",
        )
    minimum = rules.minimum_duration_days
    known = session.exec(select(Metric.id).where(Metric.key == body.primary_metric.metric)).first()
    # An unknown primary metric is the protocol's own error (it names the metric): no duration
    # can be planned from it, and blaming the duration's inputs would hide the real cause.
    if minimum is not None and known is not None:
        days = _planned_days(session, body)
        lacking = [f for f in ("baseline", "expected_daily_units") if getattr(body, f) is None]
        if days is None and lacking:
            fail(
                lacking[0],
                "minimum_duration",
                f"the template needs a planned duration of at least {minimum} days: give "
                + " and ".join(f"`{f}`" for f in lacking)
                + " so that it can be computed",
            )
        elif days is not None and days < minimum:
            fail(
                "expected_daily_units",
                "minimum_duration",
                f"the planned duration is {days} days; the minimum is {minimum} days (lower "
                "expected_daily_units or traffic_fraction, or a smaller mde needs more units)",
            )
    return errors


_ACTOR_KEY = re.compile(r"\(key (\d+)\)$")


def written_by_admin(session: Session, ver: ProtocolTemplateVersion) -> bool:
    """Whether an admin key wrote this version (``created_by`` is ``"<name> (key <id>)"``).

    Only admins write templates now; a version an editor wrote before that rule existed does not
    count as the organisation's standard.
    """
    found = _ACTOR_KEY.search(ver.created_by)
    if found is None:
        return False
    row = session.get(ApiKey, int(found.group(1)))
    return row is not None and row.role == Role.admin.value


def resolve_template(
    session: Session, key: str | None
) -> tuple[ProtocolTemplate, ProtocolTemplateVersion] | None:
    """The named template (latest version, written by an admin), or the organisation default, or
    none."""
    if key is not None:
        tpl = session.exec(select(ProtocolTemplate).where(ProtocolTemplate.key == key)).first()
        if tpl is None:
            raise ValidationFailedError.on(
                "template", f"no template '{key}'; list them with GET /v1/templates"
            )
        ver = get_version_row(session, tpl)
        if not written_by_admin(session, ver):
            raise ValidationFailedError.on(
                "template",
                f"template '{key}' v{ver.version} was not written by an admin, so it is not an "
                "approved standard; name another template, or omit `template` to register under "
                "the organisation default",
            )
        return tpl, ver
    tpl = session.exec(
        select(ProtocolTemplate).where(col(ProtocolTemplate.is_default).is_(True))
    ).first()
    if tpl is None:
        return None
    return tpl, get_version_row(session, tpl)


def template_problems(session: Session, body: dict[str, Any]) -> list[FieldError]:
    """A protocol problem hook (:mod:`service.wiring`): the problems of the template a create body
    names, beside its field rules' (nothing when it names none or no such template)."""
    template = body.get("template")
    if not isinstance(template, str) or not template:
        return []
    try:
        resolve_template(session, template)
    except ValidationFailedError as exc:
        return list(exc.errors or [])
    except NotFoundError:
        return []
    return []


def protocol_hook(
    session: Session, body: ExperimentCreate, who: Principal
) -> tuple[ExperimentCreate, str | None, int | None]:
    """In ``experiments.hooks.protocol_hooks`` (service.wiring): defaults, then rules (422)."""
    found = resolve_template(session, body.template)
    if found is None:
        return body, None, None
    tpl, ver = found
    body = apply_defaults(body, TemplateDefaults.model_validate(ver.defaults))
    errors = rule_errors(
        session,
        body,
        TemplateRules.model_validate(ver.rules),
        f"template '{tpl.key}' v{ver.version}",
    )
    if errors:
        raise ValidationFailedError(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        )
    return body, tpl.key, ver.version


def registered_version(
    session: Session, exp: Experiment
) -> tuple[ProtocolTemplate, ProtocolTemplateVersion] | None:
    """The template and the version the experiment was registered under, or None."""
    if exp.template is None or exp.template_version is None:
        return None
    tpl = session.exec(select(ProtocolTemplate).where(ProtocolTemplate.key == exp.template)).first()
    if tpl is None:
        return None
    return tpl, get_version_row(session, tpl, exp.template_version)


def rules_of(session: Session, exp: Experiment) -> TemplateRules | None:
    """The rules of the template version the experiment was registered under."""
    found = registered_version(session, exp)
    return None if found is None else TemplateRules.model_validate(found[1].rules)


def update_hook(
    session: Session,
    exp: Experiment,
    protocol: ExperimentCreate,
    changed: frozenset[str],
    who: Principal,
) -> str | None:
    """In ``experiments.hooks.update_hooks`` (service.wiring): the rules again at a draft's PATCH.

    The merged protocol is checked against the rules of the template *version the experiment was
    registered under* (a 422 naming each violated rule, as at create). When that version requires
    an approval, a change of the protocol the approver reviewed (any field but the always-editable
    title, description, owner, tags and overrides) clears the approval, and so does handing the
    ownership to the approver; the returned note goes into the update's audit entry.
    """
    if exp.status != Status.draft.value:
        return None  # later the protocol is frozen; the version's rules held at registration
    found = registered_version(session, exp)
    if found is None:
        return None
    tpl, ver = found
    rules = TemplateRules.model_validate(ver.rules)
    label = f"template '{tpl.key}' v{ver.version}"
    errors = rule_errors(session, protocol, rules, label)
    if errors:
        raise ValidationFailedError(
            "; ".join(f"{e.field}: {e.message}" for e in errors), errors=errors
        )
    approver = exp.approved_by
    if not rules.approval_required or approver is None:
        return None
    reviewed = sorted(changed - experiments.ALWAYS_EDITABLE)
    if reviewed:
        why = f"the protocol changed ({', '.join(reviewed)})"
    elif "owner" in changed and approver.startswith(f"{protocol.owner} (key "):
        why = "the approver became the owner"
    else:
        return None
    exp.approved_by = None
    return (
        f"approval by {approver} cleared: {label} requires an approval and {why}; "
        "approve again before start"
    )


# ----------------------------------------------------------------------------------- approval


def _pending_phase_requester(session: Session, exp: Experiment) -> str | None:
    """Who posted the new phase that waits for an approval (the latest ``new_phase`` entry)."""
    return session.exec(
        select(AuditEntry.actor)
        .where(AuditEntry.experiment_id == exp.id, AuditEntry.action == "new_phase")
        .order_by(col(AuditEntry.id).desc())
    ).first()


def approval_check(session: Session, exp: Experiment, who: Principal) -> None:
    """In ``experiments.hooks.start_checks`` (service.wiring): refuse start (and the resume of a new
    phase) without an approval."""
    rules = rules_of(session, exp)
    if rules is not None and rules.approval_required and exp.approved_by is None:
        what = "start" if exp.status == Status.draft.value else f"phase {exp.phase} runs"
        raise ConflictError(
            f"Template '{exp.template}' v{exp.template_version} requires an approval before "
            f"{what}: an editor other than the creator, the owner and the author of the change "
            "calls "
            f"POST /v1/experiments/{exp.key}/approve.",
            code="approval_required",
        )


def phase_hook(session: Session, exp: Experiment, who: Principal) -> str | None:
    """In ``experiments.hooks.phase_hooks`` (service.wiring): under a template version that requires
    an approval, a new phase clears the approval and waits (paused) for a fresh one."""
    rules = rules_of(session, exp)
    if rules is None or not rules.approval_required:
        return None
    previous = exp.approved_by
    exp.approved_by = None
    cleared = f"approval by {previous} cleared; " if previous else ""
    return (
        f"{cleared}template '{exp.template}' v{exp.template_version} requires an approval: the "
        "new phase waits, paused, until another editor approves it and it is resumed"
    )


def approve(session: Session, key: str, who: Principal, note: str | None) -> ExperimentPublic:
    """Record an approval by someone other than the experiment's creator and owner (and, for a
    new phase, the author of the phase)."""
    exp = experiments.get_row(session, key)
    rules = rules_of(session, exp)
    waiting_phase = (
        exp.status == Status.paused.value
        and exp.approved_by is None
        and rules is not None
        and rules.approval_required
    )
    if exp.status != Status.draft.value and not waiting_phase:
        raise ConflictError(
            f"Only a draft, or a new phase waiting for approval, is approved; '{key}' is "
            f"'{exp.status}'.",
            code="illegal_transition",
        )
    if exp.approved_by is not None:
        raise ConflictError(f"'{key}' was already approved by {exp.approved_by}.", code="approved")
    # The creator is known exactly (the key that created it); the owner is a free-form name, so
    # a key whose name equals the owner field is taken to be the owner.
    if who.actor == exp.created_by or who.name == exp.owner:
        raise PermissionDeniedError(
            "An experiment is approved by someone other than its creator and owner; "
            "ask another editor.",
            code="self_approval",
        )
    if waiting_phase and who.actor == _pending_phase_requester(session, exp):
        raise PermissionDeniedError(
            f"Phase {exp.phase} is approved by someone other than the one who started it; "
            "ask another editor.",
            code="self_approval",
        )
    exp.approved_by = who.actor
    exp.updated_at = utcnow()
    session.add(exp)
    details = {"phase": exp.phase} if waiting_phase else None
    experiments.audit(session, exp, who.actor, "approve", note=note, details=details)
    session.commit()
    return experiments.to_public(session, exp)
