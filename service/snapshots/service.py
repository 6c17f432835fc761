"""Refresh, store and read results snapshots (``product.md`` §12).

A **refresh** of an experiment phase:

1. claims the experiment in ``results_refresh_claim`` (``INSERT … ON CONFLICT DO UPDATE … WHERE
   the claim is stale``: one refresh per experiment at a time across processes, on SQLite and
   PostgreSQL alike) and inserts a ``pending`` snapshot row, in one short write transaction;
2. reads the data in **one read transaction** that sees a single consistent cut of the
   database: SQLite's WAL read transaction and PostgreSQL's ``REPEATABLE READ`` both fix their
   snapshot at the first read, and an event batch commits atomically, so the analysis sees each
   batch entirely or not at all, whatever is ingested meanwhile. The first statements read the
   largest exposure and conversion ids and the receipt time of those rows (``data_until``; on
   a data source, the newest exposure or event time the source holds for the experiment);
3. runs :func:`service.analysis.service.analyse` (the §6 results and the per-variant sufficient
   statistics they came from), the slices (one pass over the units grouped by every
   dimension's bucket; the marginal sums of each dimension are summed in Python) and the
   series (see below);
4. stores everything in the snapshot row (``ready``) and releases the claim.

A refresh runs on a schedule for running experiments (:func:`refresh_scheduler`,
``TRIALBOOK_REFRESH_INTERVAL_SECONDS``), on demand (``POST …/results/refresh``), and at stop (in
the stop's own transaction, see :func:`on_transition`). ``GET …/results`` serves the newest ready
snapshot whose **definition fingerprint** (phase, variants, metrics and their definitions, the
analysis settings, stopped or not) matches the experiment's: after a change of definition a new
snapshot is computed on that read, as for an experiment without one.

**Series.** Day ``d`` of a phase is ``[start + (d−1)·24 h, start + d·24 h)``; its point is the
analysis of the data cut at the day's end (units first exposed and events before it:
``Window.until``). A finished day (ended :data:`FINAL_AFTER` before the refresh) is computed
once per definition and kept in ``results_day``; a refresh computes only the days finished since
the last one (the backfill fills every missing day, so an experiment started before the server
has its whole series), the current day being the refresh's own analysis. A unit exposed to two
variants is excluded from every day (``exposure_unit`` keeps only the unit's state now).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from scipy import stats as scipy_stats
from sqlalchemy import delete, func, inspect, text
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

import stats
from service.analysis.aggregate import (
    OTHER,
    UNKNOWN,
    Aggregator,
    ExposureCounts,
    MetricSums,
    SliceRanks,
    StoreAggregator,
)
from service.analysis.models import ResultsPublic
from service.analysis.service import (
    AnalysisData,
    analyse,
    analysis_window,
    metric_specs,
    quantile_ranks_wanted,
)
from service.db import IMMEDIATE, get_engine, open_session, utcnow
from service.errors import AppError, ConflictError, NotFoundError
from service.events.models import Conversion, Exposure
from service.experiments import service as experiments
from service.experiments.models import Experiment, Status
from service.periodic import PeriodicTask
from service.snapshots.models import (
    DimensionSlices,
    Heterogeneity,
    PointComparison,
    PointMetric,
    RefreshAccepted,
    RefreshClaim,
    ResultsDay,
    ResultsSnapshot,
    SliceComparison,
    SliceMetric,
    SlicesPublic,
    SliceValue,
    SnapshotList,
    SnapshotResultsPublic,
    SnapshotSummary,
    TimeseriesPoint,
    TimeseriesPublic,
)
from service.warehouse.source import aggregator_for

log = logging.getLogger("trialbook.snapshots")

DAY = timedelta(days=1)
# A day's point is final (stored, never recomputed) once the day ended this long before the
# refresh: the SDK delivers within minutes (retries up to 10 min by default), so a day's events
# are in by then.
FINAL_AFTER = timedelta(hours=1)
# A claim older than this is taken over (its process died mid-refresh). Seconds.
CLAIM_STALE_SECONDS = 1800.0
# Slice values kept per dimension; the others are `other` (product.md §12).
TOP_VALUES = 10
# How long a read waits for a refresh another process runs, seconds.
READ_WAIT_SECONDS = 120.0


class SnapshotFailedError(AppError):
    """The refresh failed (a data source refused or timed out): the stored error, as 502."""

    status = 502
    code = "snapshot_failed"
    title = "The results could not be computed"


STOPPED = frozenset({Status.stopped.value, Status.concluded.value})
# The status label in a stored response (``results_snapshot.response``), filled in on read: an
# experiment paused or resumed keeps its snapshot. Stored strings never hold NUL (refused at
# every input), so its JSON form occurs in a response only as the status.
STATUS_PLACEHOLDER = "\x00status\x00"
_PLACEHOLDER_JSON = json.dumps(STATUS_PLACEHOLDER)


# ----------------------------------------------------------------------------- definition


def dimensions_of(exp: Experiment) -> list[str]:
    return list(getattr(exp, "dimensions", None) or [])


def fingerprint(session: Session, exp: Experiment, *, with_status: bool = True) -> str:
    """SHA-256 of everything the analysis of the current phase depends on besides the data."""
    from service.metrics.models import Metric

    phase = experiments.current_phase(session, exp)
    keys = [exp.primary_metric, *exp.secondary_metrics, *(g["metric"] for g in exp.guardrails)]
    metrics = session.exec(select(Metric).where(col(Metric.key).in_(keys))).all()
    definition: dict[str, Any] = {
        "phase": exp.phase,
        "variants": phase.variants if phase is not None else exp.variants,
        "started_at": phase.started_at.isoformat() if phase and phase.started_at else None,
        "metrics": [exp.primary_metric, exp.secondary_metrics, exp.guardrails],
        "catalogue": sorted(
            (
                m.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})
                for m in metrics
            ),
            key=lambda m: str(m.get("key")),
        ),
        "analysis": exp.analysis,
        "alpha": exp.alpha,
        "power": exp.power,
        "mde": exp.primary_mde,
        "baseline": exp.baseline,
        "sample_size_per_variant": exp.sample_size_per_variant,
        "overrides": sorted(exp.overrides or {}),
        "attribution_window_hours": exp.attribution_window_hours,
        "dimensions": dimensions_of(exp),
        "data_source": getattr(exp, "data_source", None),
    }
    if with_status:
        definition["stopped"] = exp.status in STOPPED
        definition["stopped_at"] = exp.stopped_at.isoformat() if exp.stopped_at else None
    blob = json.dumps(definition, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------ sufficient statistics


def data_to_json(data: AnalysisData) -> dict[str, Any]:
    return {
        "counts": {
            "units": data.counts.units,
            "multiple_exposures": data.counts.multiple_exposures,
            "overridden_units": data.counts.overridden_units,
        },
        "sums": {
            # an overflowed sum (inf, NaN) is not JSON: kept as its text, which float() reads back
            metric: {
                v: {
                    "n": s.n,
                    "sums": {k: x if math.isfinite(x) else repr(x) for k, x in s.sums.items()},
                }
                for v, s in per.items()
            }
            for metric, per in data.sums.items()
        },
    }


def data_from_json(blob: dict[str, Any]) -> AnalysisData:
    c = blob["counts"]
    return AnalysisData(
        counts=ExposureCounts(
            units={str(k): int(v) for k, v in c["units"].items()},
            multiple_exposures=int(c["multiple_exposures"]),
            overridden_units=int(c["overridden_units"]),
        ),
        sums={
            metric: {
                v: MetricSums(int(s["n"]), {k: float(x) for k, x in s["sums"].items()})
                for v, s in per.items()
            }
            for metric, per in blob["sums"].items()
        },
    )


def reanalyse(session: Session, snapshot_id: int) -> ResultsPublic:
    """The analysis of a stored snapshot's sufficient statistics (no event is read)."""
    row = session.get(ResultsSnapshot, snapshot_id)
    if row is None or row.data is None:
        raise NotFoundError(f"No ready snapshot {snapshot_id}.")
    exp = session.get(Experiment, row.experiment_id)
    assert exp is not None
    return analyse(session, exp.key, data=data_from_json(row.data))[0]


# --------------------------------------------------------------------------- consistent reads


@contextmanager
def consistent_read() -> Iterator[Session]:
    """A session whose reads all see one committed state of the database (see module doc)."""
    engine = get_engine()
    with Session(engine, expire_on_commit=False) as session:
        if engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            session.connection()  # BEGIN (deferred): the snapshot is fixed at the first read
        yield session


def _watermark(session: Session) -> tuple[int | None, int | None, datetime | None]:
    """Largest exposure and conversion ids visible, and the newest receipt time among them."""
    ex = session.exec(select(func.max(Exposure.id))).one()
    cv = session.exec(select(func.max(Conversion.id))).one()
    times = []
    if ex is not None:
        times.append(session.exec(select(Exposure.received_at).where(Exposure.id == ex)).one())
    if cv is not None:
        times.append(session.exec(select(Conversion.received_at).where(Conversion.id == cv)).one())
    return ex, cv, max(times) if times else None


# ---------------------------------------------------------------------------------- computing


def _point(day: int, until: datetime, final: bool, results: ResultsPublic) -> TimeseriesPoint:
    metrics = []
    units = results.power.units_per_variant
    for m in results.metrics:
        metrics.append(
            PointMetric(
                metric=m.metric,
                role=m.role,
                comparisons=[
                    PointComparison(
                        variant=c.variant,
                        control=c.control,
                        units=units.get(c.variant, 0),
                        control_units=units.get(c.control, 0),
                        absolute=c.absolute,
                        relative=c.relative,
                        p_value_adjusted=c.p_value_adjusted,
                        sequential=c.sequential,
                    )
                    for c in m.comparisons
                ],
            )
        )
    return TimeseriesPoint(day=day, until=until, final=final, units=units, metrics=metrics)


def day_until(started_at: datetime, day: int) -> datetime:
    return started_at + day * DAY


def _days(exp: Experiment, started_at: datetime, now: datetime) -> int:
    end = min(now, exp.stopped_at) if exp.stopped_at is not None else now
    return max(1, math.ceil((end - started_at) / DAY))


def compute_series(
    session: Session,
    exp: Experiment,
    now: datetime,
    current: ResultsPublic,
    stored: dict[int, TimeseriesPoint],
    source: Aggregator | None = None,
) -> tuple[list[TimeseriesPoint], list[TimeseriesPoint]]:
    """The points of every day of the phase, and those newly final (to store).

    ``stored``: the final points already kept for this definition. The last day's point is
    ``current`` (the refresh's own analysis) unless that day has ended.
    """
    phase = experiments.current_phase(session, exp)
    started_at = phase.started_at if phase is not None else exp.started_at
    if started_at is None:
        return [], []
    points: list[TimeseriesPoint] = []
    new: list[TimeseriesPoint] = []
    n = _days(exp, started_at, now)
    for day in range(1, n + 1):
        until = day_until(started_at, day)
        if day in stored:
            points.append(stored[day])
            continue
        if until > now:  # the day under way: the data so far is the refresh's own
            points.append(_point(day, until, False, current))
            continue
        point = _point(
            day,
            until,
            until <= now - FINAL_AFTER,
            analyse(session, exp.key, until=until, source=source)[0],
        )
        points.append(point)
        if point.final:
            new.append(point)
    return points, new


def _add(a: MetricSums | None, b: MetricSums) -> MetricSums:
    if a is None:
        return MetricSums(b.n, dict(b.sums))
    return MetricSums(a.n + b.n, {k: a.sums.get(k, 0.0) + v for k, v in b.sums.items()})


def cochran_q(estimates: Sequence[float], std_errors: Sequence[float]) -> tuple[float, int, float]:
    """Cochran's Q = Σ wᵢ (θᵢ − θ̄)², wᵢ = 1/seᵢ², θ̄ = Σ wᵢθᵢ / Σ wᵢ; df = k − 1; p = P(χ²_df > Q).

    Cochran (1954), "The combination of estimates from different experiments"."""
    w = [1.0 / (s * s) for s in std_errors]
    pooled = sum(wi * t for wi, t in zip(w, estimates, strict=True)) / sum(w)
    q = sum(wi * (t - pooled) ** 2 for wi, t in zip(w, estimates, strict=True))
    df = len(estimates) - 1
    return q, df, float(scipy_stats.chi2.sf(q, df))


Combos = dict[tuple[str, ...], dict[str, dict[str, MetricSums]]]


def _slice_combos(
    session: Session,
    exp: Experiment,
    units: int,
    variants: list[str],
    source: Aggregator | None = None,
) -> tuple[list[tuple[str, Sequence[str]]], Combos]:
    """Each dimension's kept values, and the sufficient statistics per combination of the
    dimensions' buckets (one pass over the units, :func:`slice_sums`)."""
    window = analysis_window(session, exp)
    specs = metric_specs(session, exp)
    agg = StoreAggregator(session) if source is None else source
    kept: list[tuple[str, Sequence[str]]] = []
    for dim in dimensions_of(exp):
        by_value = agg.slice_counts(window, dim)
        ranked = sorted(
            ((v, n) for v, n in by_value.items() if v is not None), key=lambda x: (-x[1], x[0])
        )
        kept.append((dim, [v for v, _ in ranked[:TOP_VALUES]]))
    combos = agg.slice_sums(specs, replace(window, dimensions=tuple(kept)), units, variants)
    return kept, combos


def analyse_sliced(
    session: Session, exp: Experiment, source: Aggregator | None = None
) -> tuple[ResultsPublic, AnalysisData, SlicesPublic | None]:
    """The analysis and its slices from one aggregation of the units.

    Every analysed unit is in exactly one combination of the dimensions' buckets (a value, `other`
    or `unknown` for each), so the whole experiment's sufficient statistics are the sums of the
    combinations': the refresh aggregates the units once, by combination, instead of once for
    the whole and once more for the slices (bench/results.py: the sliced refresh then costs the
    plain one plus the per-dimension value counts)."""
    if not dimensions_of(exp):
        results, data = analyse(session, exp.key, source=source)
        return results, data, None
    agg = StoreAggregator(session) if source is None else source
    counts = agg.count_exposures(analysis_window(session, exp))
    phase = experiments.current_phase(session, exp)
    configured = {str(v["key"]) for v in (phase.variants if phase is not None else exp.variants)}
    total = sum(n for v, n in counts.units.items() if v in configured)
    if total == 0:
        results, data = analyse(session, exp.key, source=source)
        return results, data, None
    kept, combos = _slice_combos(session, exp, total, list(counts.units), source)
    # as analysis.service.analyse sums them: every summed metric, quantiles read apart
    whole: dict[str, dict[str, MetricSums]] = {
        spec.key: {} for spec in metric_specs(session, exp) if spec.type != "quantile"
    }
    for per_metric in combos.values():
        for metric, per_variant in per_metric.items():
            if metric in whole:
                slot = whole[metric]
                for variant, sums in per_variant.items():
                    slot[variant] = _add(slot.get(variant), sums)
    results, data = analyse(session, exp.key, data=AnalysisData(counts, whole), source=source)
    return results, data, compute_slices(session, exp, results, data, (kept, combos), source)


def compute_slices(
    session: Session,
    exp: Experiment,
    current: ResultsPublic,
    data: AnalysisData,
    combos_: tuple[list[tuple[str, Sequence[str]]], Combos] | None = None,
    source: Aggregator | None = None,
) -> SlicesPublic | None:
    """Every metric's comparisons per slice value of each dimension (exploratory).

    ``combos_``: the kept values and the sums per combination, when already aggregated."""
    dims = dimensions_of(exp)
    if not dims or current.units == 0:
        return None
    kept, combos = (
        combos_
        if combos_ is not None
        else _slice_combos(session, exp, current.units, list(data.counts.units), source)
    )
    correction = current.correction
    # Every slice's sums and units first: a quantile metric's slice needs the order statistics
    # of the slice's own units, read for every slice at once (one statement per variant).
    slices_of: list[tuple[str, list[str], dict[str, AnalysisData]]] = []
    for k, (dim, values) in enumerate(kept):
        marginal: dict[str, dict[str, dict[str, MetricSums]]] = {}
        for combo, per_metric in combos.items():
            target = marginal.setdefault(combo[k], {})
            for metric, per_variant in per_metric.items():
                slot = target.setdefault(metric, {})
                for variant, sums in per_variant.items():
                    slot[variant] = _add(slot.get(variant), sums)
        order = [v for v in values if v in marginal] + [
            v for v in (OTHER, UNKNOWN) if v in marginal and v not in values
        ]
        slice_data: dict[str, AnalysisData] = {}
        for value in order:
            slice_stats = marginal[value]
            per_variant_units = {
                v: next((s[v].n for s in slice_stats.values() if v in s), 0)
                for v in data.counts.units
            }
            slice_units = ExposureCounts(
                units=per_variant_units, multiple_exposures=0, overridden_units=0
            )
            slice_data[value] = AnalysisData(slice_units, slice_stats)
        slices_of.append((dim, order, slice_data))
    quantile_specs = [spec for spec in metric_specs(session, exp) if spec.type == "quantile"]
    if quantile_specs:
        ranks: SliceRanks = {
            (k, value): quantile_ranks_wanted(quantile_specs, d.counts.units, current.alpha)
            for k, (_dim, _order, by_value) in enumerate(slices_of)
            for value, d in by_value.items()
        }
        agg = StoreAggregator(session) if source is None else source
        window = replace(analysis_window(session, exp), dimensions=tuple(kept))
        got = agg.slice_order_statistics(quantile_specs, window, ranks)
        for k, (_dim, _order, by_value) in enumerate(slices_of):
            for value, d in by_value.items():
                d.order_statistics = got.get((k, value), {})
    out: list[DimensionSlices] = []
    for dim, order, slice_data in slices_of:
        analysed: dict[str, ResultsPublic] = {}
        units: dict[str, int] = {}
        for value in order:
            units[value] = sum(slice_data[value].counts.units.values())
            analysed[value] = analyse(session, exp.key, data=slice_data[value], source=source)[0]
        metrics: list[SliceMetric] = []
        heterogeneity: list[Heterogeneity] = []
        for i, m in enumerate(current.metrics):
            family: list[tuple[str, int, float]] = []  # (value, comparison index, p)
            for value in order:
                for j, c in enumerate(analysed[value].metrics[i].comparisons):
                    p = (
                        c.sequential.absolute.p_value
                        if c.sequential is not None
                        else c.absolute.p_value
                    )
                    family.append((value, j, math.nan if p is None else p))
            adjusted = stats.adjust_p_values([p for _, _, p in family], correction)
            adj = {(v, j): a for (v, j, _), a in zip(family, adjusted, strict=True)}
            slices = []
            for value in order:
                sm = analysed[value].metrics[i]
                u = analysed[value].power.units_per_variant
                comps = []
                for j, c in enumerate(sm.comparisons):
                    a = adj[(value, j)]
                    a_out = None if math.isnan(a) else a
                    comps.append(
                        SliceComparison(
                            variant=c.variant,
                            control=c.control,
                            units=u.get(c.variant, 0),
                            control_units=u.get(c.control, 0),
                            absolute=c.absolute,
                            relative=c.relative,
                            p_value_adjusted=a_out,
                            significant=a_out is not None and a_out < current.alpha,
                            warnings=c.warnings,
                        )
                    )
                slices.append(SliceValue(value=value, units=units[value], comparisons=comps))
            metrics.append(SliceMetric(metric=m.metric, role=m.role, slices=slices))
            if m.role != "primary":
                continue
            for c in m.comparisons:
                est: list[float] = []
                ses: list[float] = []
                for value in order:
                    sc = next(
                        (
                            x
                            for x in analysed[value].metrics[i].comparisons
                            if x.variant == c.variant
                        ),
                        None,
                    )
                    if sc is None or sc.absolute.estimate is None or not sc.absolute.std_error:
                        continue
                    est.append(sc.absolute.estimate)
                    ses.append(sc.absolute.std_error)
                if len(est) >= 2:
                    q, df, p = cochran_q(est, ses)
                    heterogeneity.append(
                        Heterogeneity(
                            metric=m.metric,
                            variant=c.variant,
                            statistic=q,
                            df=df,
                            p_value=p,
                            slices=len(est),
                        )
                    )
                else:
                    heterogeneity.append(
                        Heterogeneity(
                            metric=m.metric,
                            variant=c.variant,
                            statistic=None,
                            df=0,
                            p_value=None,
                            slices=len(est),
                        )
                    )
        out.append(
            DimensionSlices(
                dimension=dim, values=units, metrics=metrics, heterogeneity=heterogeneity
            )
        )
    return SlicesPublic(dimensions=out)


def _stored_days(session: Session, exp: Experiment, fp: str) -> dict[int, TimeseriesPoint]:
    rows = session.exec(
        select(ResultsDay).where(
            ResultsDay.experiment_id == exp.id,
            ResultsDay.phase == exp.phase,
            ResultsDay.fingerprint == fp,
        )
    ).all()
    return {r.day: TimeseriesPoint.model_validate(r.point) for r in rows}


def _compute(
    session: Session, exp: Experiment, *, series: bool = True, slices_: bool = True
) -> dict[str, Any]:
    """Everything a snapshot stores, read in ``session`` (one consistent cut)."""
    now = utcnow()
    ex, cv, until = _watermark(session)
    # The experiment's data source (§13), open for the whole refresh; None: the built-in store.
    with aggregator_for(session, exp) as source:
        if source is not None:  # the newest exposure or event the source holds (§13)
            until = source.data_until(analysis_window(session, exp), metric_specs(session, exp))
        if slices_:
            results, data, slices = analyse_sliced(session, exp, source)
        else:
            (results, data), slices = analyse(session, exp.key, source=source), None
        points: list[TimeseriesPoint] | None = None
        new: list[TimeseriesPoint] = []
        day_fp = fingerprint(session, exp, with_status=False)
        if series:
            stored = _stored_days(session, exp, day_fp)
            points, new = compute_series(session, exp, now, results, stored, source)
    return {
        "fingerprint": fingerprint(session, exp),
        "day_fingerprint": day_fp,
        "exposure_watermark": ex,
        "conversion_watermark": cv,
        "data_until": until,
        "computed_at": results.computed_at,
        "results": results.model_dump(mode="json"),
        "data": data_to_json(data),
        "slices": None if slices is None else slices.model_dump(mode="json"),
        "timeseries": None if points is None else [p.model_dump(mode="json") for p in points],
        "new_days": new,
    }


def _store(session: Session, row: ResultsSnapshot, exp: Experiment, got: dict[str, Any]) -> None:
    for name in (
        "fingerprint",
        "exposure_watermark",
        "conversion_watermark",
        "data_until",
        "computed_at",
        "results",
        "data",
        "slices",
        "timeseries",
    ):
        setattr(row, name, got[name])
    row.state = "ready"
    session.add(row)
    if row.id is None:
        session.flush()
    # serialized once here, so that a read is a lookup (see latest_response)
    row.response = render(_public(row, exp, status=STATUS_PLACEHOLDER))
    assert exp.id is not None
    for point in got["new_days"]:
        if session.get(ResultsDay, (exp.id, exp.phase, point.day, got["day_fingerprint"])) is None:
            session.add(
                ResultsDay(
                    experiment_id=exp.id,
                    phase=exp.phase,
                    day=point.day,
                    fingerprint=got["day_fingerprint"],
                    until=point.until,
                    computed_at=got["computed_at"],
                    point=point.model_dump(mode="json"),
                )
            )


# ------------------------------------------------------------------------------ refresh claims


def _claim(session: Session, exp_id: int, snapshot_id: int, token: str) -> int:
    """Take the experiment's refresh claim unless a fresh one is held; the holder's snapshot."""
    now = utcnow()
    dialect = session.get_bind().dialect.name
    stmt = text(
        "INSERT INTO results_refresh_claim (experiment_id, snapshot_id, token, claimed_at)"
        " VALUES (:e, :s, :t, :now) ON CONFLICT (experiment_id) DO UPDATE SET"
        " snapshot_id = excluded.snapshot_id, token = excluded.token,"
        " claimed_at = excluded.claimed_at WHERE results_refresh_claim.claimed_at < :stale"
    )
    stale = now - timedelta(seconds=CLAIM_STALE_SECONDS)
    if dialect == "sqlite":  # UTCDateTime's text form, compared as text
        params: dict[str, Any] = {
            "now": now.replace(tzinfo=None).isoformat(" ", "microseconds"),
            "stale": stale.replace(tzinfo=None).isoformat(" ", "microseconds"),
        }
    else:
        params = {"now": now, "stale": stale}
    session.connection().execute(stmt, {"e": exp_id, "s": snapshot_id, "t": token} | params)
    holder = session.get(RefreshClaim, exp_id, populate_existing=True)
    assert holder is not None
    return holder.snapshot_id if holder.token != token else snapshot_id


def request_refresh(key: str, trigger: str) -> tuple[RefreshAccepted, str | None]:
    """Claim a refresh of ``key``: (the answer, the claim token if this call holds it)."""
    token = uuid.uuid4().hex
    with open_session(write=True) as session:
        exp = experiments.get_row(session, key)
        assert exp.id is not None
        row = ResultsSnapshot(
            experiment_id=exp.id, phase=exp.phase, state="pending", trigger=trigger
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        holder = _claim(session, exp.id, row.id, token)
        if holder != row.id:
            session.delete(row)
            pending = session.get(ResultsSnapshot, holder)
            session.commit()
            return (
                RefreshAccepted(
                    experiment=key,
                    snapshot_id=holder,
                    state="pending" if pending is None else pending.state,
                    already_running=True,
                ),
                None,
            )
        session.commit()
        return RefreshAccepted(
            experiment=key, snapshot_id=row.id, state="pending", already_running=False
        ), token


def run_refresh(snapshot_id: int, token: str, *, series: bool = True, slices: bool = True) -> None:
    """Compute a claimed snapshot and store it; release the claim whatever happens.

    ``series=False`` / ``slices=False`` leave the series / the slices out (bench/results.py
    times the plain refresh without them)."""
    got: dict[str, Any] | None = None
    error: str | None = None
    exp_id: int | None = None
    try:
        with consistent_read() as session:
            row = session.get(ResultsSnapshot, snapshot_id)
            assert row is not None
            exp_id = row.experiment_id
            exp = session.get(Experiment, row.experiment_id)
            assert exp is not None
            got = _compute(session, exp, series=series, slices_=slices)
    except AppError as exc:  # a data source's refusal (§13): its problem, said as it is
        log.warning("refresh of snapshot %s failed: %s", snapshot_id, exc.detail)
        error = f"{exc.code}: {exc.detail}"[:2000]
    except Exception as exc:
        log.exception("refresh of snapshot %s failed", snapshot_id)
        error = f"{type(exc).__name__}: {exc}"[:2000]
    with open_session(write=True) as session:
        row = session.get(ResultsSnapshot, snapshot_id)
        if row is not None:
            exp = session.get(Experiment, row.experiment_id)
            if got is not None and exp is not None:
                _store(session, row, exp, got)
            else:
                row.state = "failed"
                row.error = error or "the experiment is gone"
                session.add(row)
        if exp_id is not None:
            session.exec(
                delete(RefreshClaim).where(
                    col(RefreshClaim.experiment_id) == exp_id, col(RefreshClaim.token) == token
                )
            )
        session.commit()


def refresh_now(key: str, trigger: str) -> int:
    """Refresh ``key`` in this thread (or wait for the refresh another holds); its snapshot id."""
    accepted, token = request_refresh(key, trigger)
    if token is not None:
        run_refresh(accepted.snapshot_id, token)
        return accepted.snapshot_id
    deadline = time.monotonic() + READ_WAIT_SECONDS
    while time.monotonic() < deadline:
        with consistent_read() as session:
            row = session.get(ResultsSnapshot, accepted.snapshot_id)
            if row is None or row.state != "pending":
                break
        time.sleep(0.2)
    return accepted.snapshot_id


# -------------------------------------------------------------------------------------- reads


def _latest(session: Session, exp: Experiment, fp: str | None = None) -> ResultsSnapshot | None:
    q = select(ResultsSnapshot).where(
        ResultsSnapshot.experiment_id == exp.id,
        ResultsSnapshot.phase == exp.phase,
        ResultsSnapshot.state == "ready",
    )
    if fp is not None:
        q = q.where(ResultsSnapshot.fingerprint == fp)
    # The sufficient statistics and the series are not read to serve the results.
    q = q.options(
        defer(ResultsSnapshot.data),  # type: ignore[arg-type]  # SQLModel types a column as its value
        defer(ResultsSnapshot.timeseries),  # type: ignore[arg-type]  # SQLModel types a column as its value
        defer(ResultsSnapshot.response),  # type: ignore[arg-type]  # SQLModel types a column as its value
    )
    return session.exec(q.order_by(col(ResultsSnapshot.id).desc()).limit(1)).first()


def _public(
    row: ResultsSnapshot, exp: Experiment, *, status: str | None = None
) -> SnapshotResultsPublic:
    assert row.results is not None and row.id is not None
    body = dict(row.results)
    # a label: the analysis depends only on stopped or not
    body["status"] = exp.status if status is None else status
    return SnapshotResultsPublic.model_validate(
        body | {"snapshot_id": row.id, "data_until": row.data_until, "slices": row.slices}
    )


def render(results: SnapshotResultsPublic) -> str:
    """The JSON text FastAPI's ``JSONResponse`` makes of the route's response model."""
    return json.dumps(
        results.model_dump(mode="json"),
        ensure_ascii=False,
        allow_nan=False,
        indent=None,
        separators=(",", ":"),
    )


def _fill(response: str, status: str) -> bytes:
    return response.replace(_PLACEHOLDER_JSON, json.dumps(status), 1).encode()


def etag(snapshot_id: int, status: str) -> str:
    """The strong entity tag of a results body: a ready snapshot never changes, its label may."""
    return f'"snapshot-{snapshot_id}-{status}"'


# ------------------------------------------------------------------ the read path's memo
#
# A read of the results (and the report) needs the definition fingerprint to find the snapshot
# to serve: with the ORM that is three queries, the metrics' model dumps and a hash, more than
# the rest of the read (bench/ingest.py's pollers: ~12 ms of server CPU per GET …/results,
# taken from the event writer's GIL). The memo keeps, per experiment key, the stored rows the
# fingerprint depends on (as the driver returns them: the experiment row, which carries
# ``updated_at``, its current phase's variants and start, and the metrics it names) with the
# fingerprint computed from them, and the last body served. A read compares the rows read now
# in raw SQL with the memo's: any difference (even of ``updated_at`` alone) misses, and the
# fingerprint is computed again the ORM way.

# Plain DB-API statements (``{mark}``: the driver's placeholder): SQLAlchemy's execution and
# transaction events cost several times these indexed reads on SQLite (see service.auth).
_DEFINITION_SQL = (
    "SELECT e.*, p.variants AS phase_variants, p.started_at AS phase_started_at "
    "FROM experiment e LEFT JOIN experiment_phase p "
    "ON p.experiment_id = e.id AND p.phase = e.phase WHERE e.key = {mark}"
)
_METRICS_SQL = "SELECT * FROM metric WHERE key IN ({marks}) ORDER BY key"
_LATEST_ID_SQL = (
    "SELECT id FROM results_snapshot WHERE experiment_id = {mark} AND phase = {mark} "
    "AND state = 'ready' AND fingerprint = {mark} ORDER BY id DESC LIMIT 1"
)
MEMO_ENTRIES = 1024  # experiments remembered per process (the memo is emptied when full)


@dataclass(frozen=True)
class Definition:
    """The stored rows an experiment's fingerprint is computed from, as read in raw SQL."""

    experiment_id: int
    phase: int
    status: str
    rows: tuple[Any, ...]


@dataclass(frozen=True)
class _Memo:
    definition: Definition
    fingerprint: str
    snapshot_id: int | None = None
    body: bytes | None = None  # the response of snapshot_id, its status label filled in


@dataclass
class _ReadCaches:
    """The memo (per experiment key) and the models kept (per snapshot id) of one engine: a
    process (a test run) may meet several databases, one engine each."""

    memo: dict[str, _Memo]
    models: dict[tuple[int, Any], SnapshotResultsPublic]
    series: dict[tuple[int, Any], TimeseriesPublic]


def _caches() -> _ReadCaches:
    engine = get_engine()
    caches: _ReadCaches | None = getattr(engine, "_trialbook_read_caches", None)
    if caches is None:
        caches = _ReadCaches({}, {}, {})
        engine._trialbook_read_caches = caches  # type: ignore[attr-defined]
    return caches


def _decoded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _mark(dbapi: Any) -> str:
    return "?" if type(dbapi).__module__.startswith("sqlite3") else "%s"


def read_definition(dbapi: Any, key: str) -> Definition | None:
    """The stored rows :func:`fingerprint` depends on, read on the DB-API connection ``dbapi``
    (in its transaction, if any); None: no experiment ``key``."""
    mark = _mark(dbapi)
    cursor = dbapi.cursor()
    try:
        cursor.execute(_DEFINITION_SQL.format(mark=mark), (key,))
        row = cursor.fetchone()
        if row is None:
            return None
        m = dict(zip((d[0] for d in cursor.description), row, strict=True))
        names = {str(m["primary_metric"]), *(_decoded(m["secondary_metrics"]) or [])}
        names |= {str(g["metric"]) for g in _decoded(m["guardrails"]) or []}
        cursor.execute(_METRICS_SQL.format(marks=",".join([mark] * len(names))), sorted(names))
        metrics = cursor.fetchall()
    finally:
        cursor.close()
    return Definition(
        experiment_id=int(m["id"]),
        phase=int(m["phase"]),
        status=str(m["status"]),
        rows=(tuple(row), *(tuple(r) for r in metrics)),
    )


def session_dbapi(session: Session) -> Any:
    """The DB-API connection of the session's transaction."""
    return session.connection().connection.driver_connection


def _remember(key: str, memo: _Memo) -> None:
    entries = _caches().memo
    if len(entries) >= MEMO_ENTRIES and key not in entries:
        entries.clear()
    entries[key] = memo


def forget_read_caches() -> None:
    """Empty the read path's memo and kept models (for a bench or a test that rewrites stored
    snapshot rows behind the service's back: the service itself never does)."""
    caches = _caches()
    caches.memo.clear()
    caches.models.clear()
    caches.series.clear()


def memo_fingerprint(key: str) -> tuple[Definition, str] | None:
    """The definition of ``key`` and its fingerprint, computed in a transaction of their own
    whose first statement reads the definition: the fingerprint is then of that definition or
    a newer one, never an older one, and the memo keeps them together (a newer one is a miss
    for a reader of the older rows, not a wrong answer). None: no experiment ``key``."""
    with Session(get_engine(), expire_on_commit=False) as session:
        definition = read_definition(session_dbapi(session), key)
        if definition is None:
            return None
        exp = session.exec(select(Experiment).where(Experiment.key == key)).first()
        if exp is None:
            return None
        fp = fingerprint(session, exp)
    _remember(key, _Memo(definition, fp))
    return definition, fp


def _read_fingerprint(session: Session, exp: Experiment) -> str:
    """:func:`fingerprint` for a read, from the memo when the stored definition is the one the
    memo holds. In a write transaction (a stop: ``exp`` changed, maybe unflushed) or with
    ``exp`` changed in the session, the ORM way."""
    if _in_write_transaction(session) or inspect(exp).modified:
        return fingerprint(session, exp)
    memo = _caches().memo.get(exp.key)
    if memo is not None and read_definition(session_dbapi(session), exp.key) == memo.definition:
        return memo.fingerprint
    fp = fingerprint(session, exp)
    memo_fingerprint(exp.key)  # for the next read
    return fp


def served_latest(key: str) -> tuple[int, str, bytes] | None:
    """The body :func:`latest_response` last gave for ``key`` — (snapshot id, status label,
    body) — if the experiment's stored definition and its latest ready snapshot are still
    those it was for; otherwise None, and the caller reads the ORM way. Two raw statements, no
    model: the read path of a results dashboard polling while events are ingested."""
    memo = _caches().memo.get(key)
    if memo is None or memo.body is None:
        return None
    conn = get_engine().raw_connection()
    try:
        # each statement its own snapshot: a definition changed after the first read still
        # finds the snapshot of the one read (as a read that ran a moment earlier would)
        definition = read_definition(conn.driver_connection, key)
        if definition != memo.definition:
            return None
        cursor = conn.cursor()
        try:
            cursor.execute(
                _LATEST_ID_SQL.format(mark=_mark(conn.driver_connection)),
                (memo.definition.experiment_id, memo.definition.phase, memo.fingerprint),
            )
            got = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        conn.close()  # back to the pool, which rolls back
    latest = got[0] if got is not None else None
    if latest != memo.snapshot_id or memo.snapshot_id is None:
        return None
    return memo.snapshot_id, memo.definition.status, memo.body


def remember_served(key: str, definition: Definition | None, snapshot_id: int, body: bytes) -> None:
    """Keep the body served for ``key`` (see :func:`served_latest`) if the memo's definition is
    ``definition``, the one read first in the transaction that served it."""
    memo = _caches().memo.get(key)
    if definition is not None and memo is not None and memo.definition == definition:
        _remember(key, replace(memo, snapshot_id=snapshot_id, body=body))


# A ready snapshot never changes (only its status label, filled in per read): the models
# validated from it are kept per snapshot id for the report, which reads the results and the
# series of the same snapshot on every view (~8 ms of validation at 100k units, more with
# slices). Callers never mutate them.
MODEL_ENTRIES = 64


def _keep(cache: dict[Any, Any], at: Any, value: Any) -> None:
    if len(cache) >= MODEL_ENTRIES:
        cache.clear()
    cache[at] = value


_LATEST_SQL = (
    "SELECT id, computed_at FROM results_snapshot WHERE experiment_id = {mark} AND phase = {mark} "
    "AND state = 'ready' AND fingerprint = {mark} ORDER BY id DESC LIMIT 1"
)


def _latest_version(session: Session, exp: Experiment, fp: str) -> tuple[int, Any] | None:
    """(id, ``computed_at`` as stored) of the newest ready snapshot of ``fp``, one raw statement
    in the session's transaction: a kept model is of that id *and* computation (ids of deleted
    rows may come back on SQLite, a test's emptied tables restart them)."""
    dbapi = session_dbapi(session)
    cursor = dbapi.cursor()
    try:
        cursor.execute(_LATEST_SQL.format(mark=_mark(dbapi)), (exp.id, exp.phase, fp))
        got = cursor.fetchone()
    finally:
        cursor.close()
    return (int(got[0]), got[1]) if got is not None else None


def _cached_public(
    session: Session, exp: Experiment, fp: str
) -> tuple[SnapshotResultsPublic | None, tuple[int, Any] | None]:
    """The kept model of the newest snapshot of ``fp`` (or None) and that snapshot's version."""
    if _in_write_transaction(session):
        return None, None
    version = _latest_version(session, exp, fp)
    hit = _caches().models.get(version) if version is not None else None
    return (hit.model_copy(update={"status": exp.status}) if hit else None), version


def latest_response(session: Session, exp: Experiment) -> tuple[int, bytes]:
    """:func:`latest_results` as its JSON body: (snapshot id, body).

    The stored response of the latest snapshot, with its status label; reading it decodes,
    validates and serializes nothing (at 1M units the snapshot's results and slices decode and
    re-validate in tens of ms, FastAPI's validation and serialization of the model as much
    again; bench/results.py). A snapshot without one (from before migration 0008), or none at
    all, goes the model's way."""
    fp = _read_fingerprint(session, exp)
    hit = session.exec(
        select(ResultsSnapshot.id, ResultsSnapshot.response)
        .where(
            ResultsSnapshot.experiment_id == exp.id,
            ResultsSnapshot.phase == exp.phase,
            ResultsSnapshot.state == "ready",
            ResultsSnapshot.fingerprint == fp,
        )
        .order_by(col(ResultsSnapshot.id).desc())
        .limit(1)
    ).first()
    if hit is not None and hit[0] is not None and hit[1] is not None:
        return hit[0], _fill(hit[1], exp.status)
    got = latest_results(session, exp)
    return got.snapshot_id, render(got).encode()


def snapshot_response(session: Session, key: str, snapshot_id: int) -> tuple[int, bytes, str]:
    """:func:`read_snapshot` as its JSON body: (snapshot id, body, the experiment's status)."""
    exp = experiments.get_row(session, key)
    hit = session.exec(
        select(
            ResultsSnapshot.experiment_id, ResultsSnapshot.state, ResultsSnapshot.response
        ).where(ResultsSnapshot.id == snapshot_id)
    ).first()
    if hit is not None and hit[0] == exp.id and hit[1] == "ready" and hit[2] is not None:
        return snapshot_id, _fill(hit[2], exp.status), exp.status
    return snapshot_id, render(read_snapshot(session, key, snapshot_id)).encode(), exp.status


def _in_write_transaction(session: Session) -> bool:
    return bool(session.connection().get_execution_options().get(IMMEDIATE, False))


def latest_results(
    session: Session, exp: Experiment, *, trigger: str = "read"
) -> SnapshotResultsPublic:
    """The newest snapshot of the experiment's current definition; computed now if none.

    In a write transaction (a stop) the snapshot is computed and added in ``session`` (the
    caller commits); otherwise a refresh runs in its own transactions.
    """
    fp = _read_fingerprint(session, exp)
    cached, version = _cached_public(session, exp, fp)
    if cached is not None:
        return cached
    row = _latest(session, exp, fp)
    if row is not None:
        public = _public(row, exp)
        if version is not None and version[0] == row.id:
            _keep(_caches().models, version, public)
        return public
    if _in_write_transaction(session):
        assert exp.id is not None
        row = ResultsSnapshot(
            experiment_id=exp.id, phase=exp.phase, state="pending", trigger=trigger
        )
        _store(session, row, exp, _compute(session, exp, series=False))
        session.flush()
        return _public(row, exp)
    snapshot_id = refresh_now(exp.key, trigger)
    with consistent_read() as other:
        got = other.get(ResultsSnapshot, snapshot_id)
        fresh = other.get(Experiment, exp.id)
        if got is not None and got.state == "failed" and got.error:
            raise SnapshotFailedError(
                f"The results of '{exp.key}' could not be computed (snapshot {snapshot_id}):"
                f" {got.error}"
            )
        if got is None or got.state != "ready" or fresh is None:
            raise ConflictError(
                f"The results of '{exp.key}' are being computed (snapshot {snapshot_id}); "
                "retry shortly.",
                code="refresh_running",
            )
        return _public(got, fresh)


def results_dict(session: Session, exp: Experiment) -> dict[str, Any]:
    """:func:`latest_results` as the §6 JSON (for alerts, insights and reports)."""
    return latest_results(session, exp).model_dump(mode="json")


def read_snapshot(session: Session, key: str, snapshot_id: int) -> SnapshotResultsPublic:
    exp = experiments.get_row(session, key)
    row = session.get(ResultsSnapshot, snapshot_id)
    if row is None or row.experiment_id != exp.id:
        raise NotFoundError(f"Experiment '{key}' has no snapshot {snapshot_id}.")
    if row.state != "ready":
        raise ConflictError(
            f"Snapshot {snapshot_id} is {row.state}"
            + (f": {row.error}" if row.error else "; retry shortly."),
            code=f"snapshot_{row.state}",
        )
    return _public(row, exp)


def list_snapshots(session: Session, key: str, limit: int, offset: int) -> SnapshotList:
    exp = experiments.get_row(session, key)
    rows = session.exec(
        select(ResultsSnapshot)
        .where(ResultsSnapshot.experiment_id == exp.id)
        # a summary reads the results only: not the statistics, slices, series or response
        .options(
            defer(ResultsSnapshot.data),  # type: ignore[arg-type]
            defer(ResultsSnapshot.slices),  # type: ignore[arg-type]
            defer(ResultsSnapshot.timeseries),  # type: ignore[arg-type]
            defer(ResultsSnapshot.response),  # type: ignore[arg-type]
        )
        .order_by(col(ResultsSnapshot.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    out = []
    for r in rows:
        assert r.id is not None
        res = r.results or {}
        out.append(
            SnapshotSummary(
                snapshot_id=r.id,
                phase=r.phase,
                state=r.state,
                trigger=r.trigger,
                requested_at=r.requested_at,
                computed_at=r.computed_at,
                data_until=r.data_until,
                recommendation=(res.get("decision") or {}).get("recommendation"),
                units=res.get("units"),
                error=r.error,
            )
        )
    return SnapshotList(experiment=exp.key, snapshots=out)


def timeseries(session: Session, key: str) -> TimeseriesPublic:
    """The latest snapshot's series; a snapshot without one (the stop's) gets a refresh."""
    exp = experiments.get_row(session, key)
    snap = latest_results(session, exp)
    hit = _caches().series.get((snap.snapshot_id, snap.computed_at))
    if hit is not None:
        return hit
    row = session.get(ResultsSnapshot, snap.snapshot_id)
    if row is None or row.timeseries is None:
        snapshot_id = refresh_now(key, "read")
        session.close()
        with consistent_read() as other:
            row = other.get(ResultsSnapshot, snapshot_id)
            exp = experiments.get_row(other, key)
            phase = experiments.current_phase(other, exp)
    else:
        phase = experiments.current_phase(session, exp)
    if row is None or row.state != "ready" or row.timeseries is None:
        raise ConflictError(
            f"The series of '{key}' is being computed; retry shortly.", code="refresh_running"
        )
    assert row.id is not None
    series = TimeseriesPublic(
        experiment=exp.key,
        phase=row.phase,
        snapshot_id=row.id,
        method=(row.results or {}).get("method", "fixed"),
        started_at=phase.started_at if phase is not None else exp.started_at,
        points=[TimeseriesPoint.model_validate(p) for p in row.timeseries],
    )
    if row.id == snap.snapshot_id:  # the phase's start is in the snapshot's fingerprint
        _keep(_caches().series, (snap.snapshot_id, snap.computed_at), series)
    return series


# ------------------------------------------------------------------------ stop and scheduling


def on_transition(session: Session, exp: Experiment, action: str, old: str, new: str) -> None:
    """In ``experiments.hooks.transition_listeners`` (service.wiring): a snapshot at stop, in the
    stop's transaction (the insights outcome taken at stop reads it)."""
    if action == "stop":
        latest_results(session, exp, trigger="stop")


def refresh_running() -> int:
    """Refresh every running experiment once (the scheduler's pass); how many were refreshed."""
    with consistent_read() as session:
        keys = list(
            session.exec(
                select(Experiment.key).where(Experiment.status == Status.running.value)
            ).all()
        )
    done = 0
    for key in keys:
        try:
            accepted, token = request_refresh(key, "schedule")
            if token is not None:
                run_refresh(accepted.snapshot_id, token)
                done += 1
        except Exception:  # one experiment must not stop the others
            log.exception("scheduled refresh of %s failed", key)
    return done


def _scheduled_refresh() -> None:
    n = refresh_running()
    if n:
        log.info("refreshed the results of %d running experiment(s)", n)


def refresh_scheduler(interval: float) -> PeriodicTask:
    """A daemon thread running :func:`refresh_running` every ``interval`` seconds."""
    return PeriodicTask("results-refresh", interval, _scheduled_refresh)
