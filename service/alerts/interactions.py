"""The scheduled interaction check: for every pair of running experiments that share units, does
one's effect on its primary metric differ across the other's arms? (``product.md`` §6)

For a pair (A, B) with shared analysed units, in both directions: A's primary metric is
aggregated per (B variant, A variant) cell over the units exposed to both, in A's analysis window
(the same SQL as the results, restricted by ``Window.also_in``), and ``stats.interaction_test``
compares A's effect within each of B's arms with its effect within B's control (difference of
effects, Bonferroni over the pair's tests). A finding raises an ``interaction`` alert on A
(one per other experiment; its webhook ``alert.interaction``). The check report lists every
overlap checked, with the shared units and the p-value, found or not.

Pairs with fewer than ``interaction_min_units`` shared units are listed but not tested (too few
to say anything), and quantile primary metrics are skipped (their cells would need order
statistics per cell).
"""

from __future__ import annotations

import itertools
import logging
import math
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

import stats
from service.alerts.findings import Finding, raise_alert
from service.alerts.models import AlertType, InteractionChecked
from service.analysis.aggregate import MetricSpec, Window, variant_sums
from service.analysis.service import metric_spec
from service.db import open_session
from service.experiments.models import Experiment, Status, VariantRow
from service.experiments.service import control_of, current_phase
from service.metrics.models import Metric

log = logging.getLogger("trialbook.alerts")

__all__ = ["check_interactions", "interaction_findings", "interactions_of"]


def _variants(session: Session, exp: Experiment) -> list[VariantRow]:
    phase = current_phase(session, exp)
    return list(phase.variants if phase is not None else exp.variants)


def _shared_units(session: Session, a: Experiment, b: Experiment) -> int:
    sql = (
        "SELECT COUNT(*) FROM exposure_unit ea JOIN exposure_unit eb ON eb.unit_id = ea.unit_id"
        " WHERE ea.experiment_id = :a AND ea.phase = :ap AND NOT ea.multiple"
        " AND eb.experiment_id = :b AND eb.phase = :bp AND NOT eb.multiple"
    )
    params = {"a": a.id, "ap": a.phase, "b": b.id, "bp": b.phase}
    return int(session.connection().execute(text(sql), params).scalar_one())


def _cell_units(session: Session, window: Window) -> int:
    assert window.also_in is not None
    sql = (
        "SELECT COUNT(*) FROM exposure_unit eu WHERE eu.experiment_id = :e AND eu.phase = :p"
        " AND NOT eu.multiple AND EXISTS (SELECT 1 FROM exposure_unit eo"
        " WHERE eo.experiment_id = :o AND eo.phase = :op AND eo.variant = :ov"
        " AND eo.unit_id = eu.unit_id AND NOT eo.multiple)"
    )
    o, op, ov = window.also_in
    params = {"e": window.experiment_id, "p": window.phase, "o": o, "op": op, "ov": ov}
    return int(session.connection().execute(text(sql), params).scalar_one())


def _summary(spec: MetricSpec, n: int, sums: dict[str, float]) -> Any:
    if spec.type == "ratio":
        return stats.RatioSummary(
            n,
            sums["sum_num"],
            sums["sum_den"],
            sums["sum_num2"],
            sums["sum_den2"],
            sums["sum_num_den"],
        )
    return stats.MeanSummary(n, sums["sum_x"], sums["sum_x2"])


def _direction(
    session: Session,
    target: Experiment,
    other: Experiment,
    shared: int,
    alpha: float,
    min_units: int,
) -> InteractionChecked:
    assert target.id is not None and other.id is not None
    metric = session.exec(select(Metric).where(Metric.key == target.primary_metric)).first()
    checked = InteractionChecked(
        experiment=target.key, other=other.key, shared_units=shared, metric=target.primary_metric
    )
    if metric is None:
        checked.skipped = "primary metric not in the catalogue"
        return checked
    if metric.type == "quantile":
        checked.skipped = "quantile primary metrics are not checked for interactions"
        return checked
    if shared < min_units:
        checked.skipped = f"fewer than {min_units} shared units"
        return checked
    spec = metric_spec(metric)
    cells: dict[str, dict[str, Any]] = {}
    for v in _variants(session, other):
        b = str(v["key"])
        window = Window(
            experiment_id=target.id,
            phase=target.phase,
            overrides=sorted(target.overrides or {}),
            attribution_window_hours=target.attribution_window_hours,
            stopped_at=target.stopped_at,
            also_in=(other.id, other.phase, b),
        )
        n = _cell_units(session, window)
        if n == 0:
            continue
        sums = variant_sums(session, [spec], window, n).get(spec.key, {})
        cells[b] = {a: _summary(spec, s.n, s.sums) for a, s in sums.items()}
    result = stats.interaction_test(
        cells,
        metric_type=spec.type,
        control=control_of(_variants(session, target)),
        other_control=control_of(_variants(session, other)),
        alpha=alpha,
    )
    checked.p_value = None if math.isnan(result.p_value) else result.p_value
    checked.found = result.found
    checked.tests = [
        {
            "treatment": t.treatment,
            "other_variant": t.other_variant,
            "effect": t.effect,
            "effect_in_other_control": t.effect_in_control,
            "difference": t.difference,
            "std_error": t.std_error,
            "p_value": t.p_value,
            "p_value_adjusted": t.p_value_adjusted,
        }
        for t in result.tests
    ]
    return checked


def interaction_findings(alpha: float, min_units: int) -> list[InteractionChecked]:
    """Check every pair of running experiments that share units, both ways (read-only)."""
    with open_session() as session:
        running = session.exec(
            select(Experiment)
            .where(Experiment.status == Status.running.value)
            .order_by(col(Experiment.id))
        ).all()
        out: list[InteractionChecked] = []
        for a, b in itertools.combinations(running, 2):
            shared = _shared_units(session, a, b)
            if shared == 0:
                continue
            for target, other in ((a, b), (b, a)):
                try:
                    out.append(_direction(session, target, other, shared, alpha, min_units))
                except Exception as exc:  # one pair must not stop the others
                    log.exception("interaction check %s x %s failed", target.key, other.key)
                    out.append(
                        InteractionChecked(
                            experiment=target.key,
                            other=other.key,
                            shared_units=shared,
                            metric=target.primary_metric,
                            error=str(exc)[:500],
                        )
                    )
        return out


def check_interactions(alpha: float, min_units: int, now: datetime) -> list[InteractionChecked]:
    """Run :func:`interaction_findings` and raise an ``interaction`` alert for each one found."""
    checked = interaction_findings(alpha, min_units)
    found = [c for c in checked if c.found]
    if not found:
        return checked
    with open_session(write=True) as session:
        for c in found:
            exp = session.exec(select(Experiment).where(Experiment.key == c.experiment)).first()
            if exp is None or exp.status != Status.running.value:
                continue
            worst = min(c.tests, key=lambda t: t["p_value_adjusted"])
            finding = Finding(
                AlertType.interaction,
                f"Interaction with '{c.other}': the effect of '{worst['treatment']}' on "
                f"'{c.metric}' is {worst['effect']:.4g} among units in '{c.other}' variant "
                f"'{worst['other_variant']}' but {worst['effect_in_other_control']:.4g} in its "
                f"control (adjusted p = {c.p_value:.3g}, {c.shared_units} shared units). The two "
                "experiments do not add up independently: read them together or separate them "
                "in a layer.",
                condition=c.other,
                details={
                    "other": c.other,
                    "shared_units": c.shared_units,
                    "tests": c.tests,
                    "checked_at": now.isoformat(),
                },
            )
            c.raised = raise_alert(session, exp, finding)
        session.commit()
    return checked


def interactions_of(
    session: Session, key: str, alpha: float, min_units: int
) -> list[InteractionChecked]:
    """The overlaps of one running experiment with every other running one, both ways, as the
    scheduled check sees them (read-only: raises no alert). Used by the report."""
    exp = session.exec(select(Experiment).where(Experiment.key == key)).first()
    if exp is None or exp.status != Status.running.value:
        return []
    others = session.exec(
        select(Experiment)
        .where(Experiment.status == Status.running.value, Experiment.id != exp.id)
        .order_by(col(Experiment.id))
    ).all()
    out: list[InteractionChecked] = []
    for other in others:
        shared = _shared_units(session, exp, other)
        if shared == 0:
            continue
        for target, against in ((exp, other), (other, exp)):
            try:
                out.append(_direction(session, target, against, shared, alpha, min_units))
            except Exception as exc:  # one pair must not hide the others
                log.exception("interaction check %s x %s failed", target.key, against.key)
                out.append(
                    InteractionChecked(
                        experiment=target.key,
                        other=against.key,
                        shared_units=shared,
                        metric=target.primary_metric,
                        error=str(exc)[:500],
                    )
                )
    return out
