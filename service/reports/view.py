"""The report's view model: what every rendering shows, built once from the typed results.

:func:`build_report` turns the experiment (``ExperimentPublic``), its results (``ResultsPublic``,
with the snapshot's slices), the §12 series, the audit trail, the alerts, the template and the
interaction check into a :class:`ReportView` of plain, typed, already formatted values. The HTML
and Markdown templates only lay it out, so both show the same labels and the same numbers.

A numeric :class:`Cell` keeps the exact JSON value and its JSON path next to its text: the HTML
puts them in ``data-value`` and ``data-field`` so tools and tests read the numbers without
parsing the rounded text. When the sample ratio check fails, every cell that comes from the
results is ``invalid`` and says so where it is shown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from service.alerts.models import AlertPublic, AlertType, InteractionChecked
from service.analysis.models import (
    ComparisonPublic,
    CupedPublic,
    EstimatePublic,
    GroupSequentialPublic,
    MetricResultPublic,
    ResultsPublic,
    SequentialPublic,
)
from service.experiments.models import AuditEntryOut, ExperimentPublic, StructuredHypothesisOut
from service.metrics.models import MetricPublic
from service.reports import charts
from service.reports.deviations import Deviation, Plan, find_deviations, plan_vs_actual
from service.reports.format import DASH, ci, days, num, pct, share, when, yes_no
from service.reports.warnings import WarningView, warning
from service.snapshots.models import SlicesPublic, SnapshotResultsPublic, TimeseriesPublic
from service.templates.models import TemplatePublic

SECTIONS: tuple[tuple[str, str], ...] = (
    ("over-time", "1. Lift over time"),
    ("scorecard", "2. Scorecard"),
    ("slices", "3. Slices"),
    ("health", "4. Health"),
    ("protocol", "5. Protocol"),
    ("deviations", "6. Deviations from the protocol"),
    ("decision", "7. Recommendation and decision"),
    ("interactions", "8. Overlaps checked"),
)
RECOMMENDATION_TEXT = {
    "ship": "Ship",
    "roll_back": "Roll back",
    "keep_running": "Keep running",
    "inconclusive": "Inconclusive",
    "invalid": "Invalid (do not use these results)",
}
# Badge colours: a recommendation's kind (CSS classes .badge.good/.bad/.warn/.info).
RECOMMENDATION_KIND = {
    "ship": "good",
    "roll_back": "bad",
    "keep_running": "info",
    "inconclusive": "warn",
    "invalid": "bad",
}
VERDICT = {
    "pass": ("PASS ✓", "good"),
    "fail": ("FAIL ✗", "bad"),
    "inconclusive": ("INCONCLUSIVE ?", "warn"),
}
ALERT_TEXT = {
    "srm": "Sample ratio mismatch",
    "guardrail_failed": "Guardrail failed",
    "decision_ready": "Decision ready",
    "overdue": "Overdue",
    "stalled": "Exposures stalled",
    "interaction": "Interaction with another experiment",
}
VALUE_LABEL = {"binomial": "Rate", "mean": "Mean", "ratio": "Ratio"}
INVALID_NOTE = "invalid: sample ratio mismatch"

Kind = Literal["good", "bad", "warn", "info", ""]


@dataclass(frozen=True)
class Cell:
    """A shown number: its text, the exact JSON value and its JSON path."""

    text: str
    value: float | int | str | None = None
    field: str | None = None
    invalid: bool = False

    @property
    def json(self) -> str:
        return json.dumps(self.value)

    @property
    def md(self) -> str:
        return f"{self.text} (invalid)" if self.invalid and self.text != DASH else self.text


@dataclass(frozen=True)
class Badge:
    text: str
    kind: Kind = ""


@dataclass(frozen=True)
class Fact:
    label: str
    text: str


@dataclass(frozen=True)
class ExtraRow:
    """A comparison read another way: CUPED, sequential, group sequential, Bayesian."""

    variant: str
    method: str
    absolute: Cell
    relative: Cell
    relative_ci: Cell
    p: Cell
    notes: str


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    variant: str
    absolute: Cell
    absolute_ci: Cell
    relative: Cell
    relative_ci: Cell
    p: Cell
    p_adjusted: Cell
    significant: str
    warnings: list[WarningView]


@dataclass(frozen=True)
class VariantRow:
    variant: str
    units: Cell
    value: Cell
    sd: Cell


@dataclass(frozen=True)
class MetricView:
    key: str
    name: str
    role: str
    type: str
    direction: str
    value_label: str  # the same column title in HTML and Markdown
    variants: list[VariantRow]
    comparisons: list[ComparisonRow]
    extras: list[ExtraRow]
    quantile_note: str | None = None


@dataclass(frozen=True)
class GuardrailRow:
    name: str
    key: str
    variant: str
    margin: Cell
    relative: Cell
    relative_ci: Cell
    direction: str
    verdict: Badge
    status_field: str


@dataclass(frozen=True)
class PrimaryLift:
    label: str
    relative: Cell
    relative_ci: Cell
    p_adjusted: Cell
    significant: str


@dataclass(frozen=True)
class LookRow:
    look: int
    information_fraction: Cell
    bound: Cell
    nominal_alpha: Cell
    alpha_spent: Cell


@dataclass(frozen=True)
class SliceRow:
    value: str
    units: Cell
    comparison: str
    relative: Cell
    relative_ci: Cell
    p_adjusted: Cell
    significant: str
    warnings: list[WarningView]


@dataclass(frozen=True)
class SliceTable:
    metric: str
    name: str
    role: str
    rows: list[SliceRow]


@dataclass(frozen=True)
class DimensionView:
    dimension: str
    heterogeneity: list[str]
    differs: bool
    tables: list[SliceTable]


@dataclass(frozen=True)
class SeriesDay:
    day: int
    until: str
    units: str
    relative: Cell
    relative_ci: Cell
    p: Cell


@dataclass(frozen=True)
class SeriesView:
    label: str
    chart: charts.LineChart | None
    days: list[SeriesDay]


@dataclass(frozen=True)
class InteractionRow:
    other: str
    direction: str
    metric: str
    shared_units: Cell
    p_value: Cell
    verdict: Badge
    detail: str


@dataclass(frozen=True)
class AlertRow:
    id: int
    type: str
    label: str
    phase: int
    raised: str
    state: str
    open: bool
    message: str


@dataclass(frozen=True)
class DecisionView:
    code: str
    label: str
    variant: str | None
    rationale: str
    decided_by: str
    decided_at: str


@dataclass(frozen=True)
class Verdict:
    """The top block: what to do and whether to trust it."""

    available: bool
    note: str
    code: str
    badge: Badge
    variant: str | None
    reasons: list[str]
    invalid: bool
    label: str
    primary_name: str
    primary_key: str
    primary: list[PrimaryLift]
    guardrails: list[GuardrailRow]
    srm: Badge
    srm_p: Cell
    srm_threshold: str
    multiple_exposures: Cell
    progress: Cell
    progress_text: str
    progress_bar: charts.ProgressBar
    units_so_far: Cell
    needed: Cell
    recorded: DecisionView | None


@dataclass(frozen=True)
class ReportView:
    key: str
    title: str
    status: str
    owner: str
    tags: list[str]
    header: list[Fact]
    generated_at: str
    shared: bool
    verdict: Verdict
    series: list[SeriesView]
    series_note: str
    forest: charts.ForestPlot | None
    scorecard_intro: str
    metrics: list[MetricView]
    results_note: str
    dimensions: list[DimensionView]
    slices_note: str
    srm_rows: list[tuple[str, Cell, Cell, Cell]]
    alerts: list[AlertRow]
    alert_summary: str
    registration: list[Fact]
    hypothesis: list[Fact] | str
    description: str | None
    variants: list[tuple[str, str, Cell, str]]
    protocol_metrics: list[tuple[str, str, str, str, str]]
    settings: list[Fact]
    looks: list[LookRow]
    plan: list[tuple[str, Cell, str, str]]
    deviations: list[Deviation]
    decision: DecisionView | None
    decision_differs: bool
    interactions: list[InteractionRow]
    interactions_note: str
    sections: tuple[tuple[str, str], ...] = SECTIONS


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report is built from (typed: the API's own response models)."""

    experiment: ExperimentPublic
    metrics: dict[str, MetricPublic]
    results: ResultsPublic | None
    generated_at: datetime
    results_note: str | None = None
    audit: Sequence[AuditEntryOut] = ()
    alerts: Sequence[AlertPublic] = ()
    template: TemplatePublic | None = None
    timeseries: TimeseriesPublic | None = None
    timeseries_note: str | None = None
    interactions: Sequence[InteractionChecked] | None = None
    interactions_note: str | None = None
    shared: bool = False
    deviations: list[Deviation] | None = field(default=None)


# ------------------------------------------------------------------------------------ helpers


def _est(e: EstimatePublic | None, leaf: str) -> float | None:
    return None if e is None else getattr(e, leaf)


def _direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


class _Cells:
    """Makes cells from the results, all marked invalid when the SRM check fails."""

    def __init__(self, invalid: bool) -> None:
        self.invalid = invalid

    def num(self, path: str | None, value: float | int | None) -> Cell:
        return Cell(num(value), value, path, self.invalid)

    def pct(self, path: str | None, value: float | None, *, signed: bool = True) -> Cell:
        return Cell(pct(value, signed=signed), value, path, self.invalid)

    def ci(self, e: EstimatePublic | None, fmt: str = "num") -> Cell:
        return Cell(ci(_est(e, "ci_low"), _est(e, "ci_high"), fmt), None, None, self.invalid)


def progress_sentence(units_so_far: int | None, needed: int | None, progress: float | None) -> str:
    """Power progress in words: the smallest arm's units, then the plan's units per variant.

    Never "9952 of 6690 units per variant": past the plan, it says the plan is reached.
    """
    if needed is None:
        return "no planned sample size (the protocol gives no baseline)."
    if units_so_far is None:
        return f"no units yet; the plan needs {needed:,} per variant."
    if progress is not None and progress >= 1.0:
        return (
            f"planned sample reached: the smallest arm has {units_so_far:,} units, the plan "
            f"needed {needed:,} per variant."
        )
    return f"the smallest arm has {units_so_far:,} units; the plan needs {needed:,} per variant."


def _hypothesis(h: str | StructuredHypothesisOut) -> list[Fact] | str:
    if isinstance(h, StructuredHypothesisOut):
        return [
            Fact("Change", h.change),
            Fact("Population", h.population),
            Fact("Expected outcome", h.expected_outcome),
            Fact("Rationale", h.rationale),
        ]
    return h


def _rules_text(t: TemplatePublic) -> str:
    r = t.rules
    out = [f"guards {g.metric} with margin ≤ {share(g.max_margin)}" for g in r.required_guardrails]
    if r.minimum_duration_days is not None:
        out.append(f"runs at least {r.minimum_duration_days} days")
    if r.allowed_primary_metrics is not None:
        out.append("primary metric one of " + ", ".join(r.allowed_primary_metrics))
    if r.require_structured_hypothesis:
        out.append("structured hypothesis")
    if r.max_secondary_metrics is not None:
        out.append(f"at most {r.max_secondary_metrics} secondary metric(s)")
    if r.approval_required:
        out.append("approval by another editor before start")
    return "; ".join(out) or "no rules"


def _registration(inp: ReportInputs) -> list[Fact]:
    exp, tpl = inp.experiment, inp.template
    if exp.template:
        text = f"{exp.template} v{exp.template_version}"
        if tpl is not None:
            text += f" — {tpl.name}"
            if tpl.latest_version != exp.template_version:
                text += (
                    f" (the template is now at v{tpl.latest_version}; this experiment keeps its "
                    "version)"
                )
        rows = [Fact("Template", text), Fact("Template rules", _rules_text(tpl) if tpl else DASH)]
    else:
        rows = [Fact("Template", "none"), Fact("Template rules", "none")]
    approvals = [a for a in inp.audit if a.action == "approve"]
    if exp.approved_by:
        text = f"approved by {exp.approved_by}"
        if approvals:
            text += f", {when(approvals[-1].at)}"
            if approvals[-1].note:
                text += f" — “{approvals[-1].note}”"
    elif tpl is not None and tpl.rules.approval_required:
        text = (
            "required before start, not given yet"
            if exp.status == "draft"
            else "required; not on record"
        )
    else:
        text = "not required"
    rows.append(Fact("Approval", text))
    return rows


def _settings(inp: ReportInputs) -> list[Fact]:
    exp, a = inp.experiment, inp.experiment.analysis
    prior = (
        f"normal(mean {num(a.prior_mean)}, sd {num(a.prior_sd)})"
        if a.prior_sd is not None
        else "flat"
    )
    rows = [
        Fact("Randomization unit", exp.randomization_unit),
        Fact("Traffic fraction", share(exp.traffic_fraction)),
        Fact("α (two-sided)", num(exp.alpha)),
        Fact("Power", num(exp.power)),
        Fact("Design", a.method),
        Fact("Multiple-testing correction", a.correction),
        Fact("CUPED", f"on, {a.pre_period_days}-day pre-period" if a.cuped else "off"),
        Fact("Bayesian", f"on, {prior} prior" if a.bayesian else "off"),
        Fact("SRM threshold", num(a.srm_threshold)),
        Fact(
            "Attribution window",
            f"{num(exp.attribution_window_hours)} h"
            if exp.attribution_window_hours is not None
            else "until stop",
        ),
    ]
    if a.method == "sequential":
        rows.append(Fact("Sequential n*", num(a.sequential_n_star)))
    gs = inp.results.group_sequential if inp.results is not None else None
    if a.method == "group_sequential":
        if gs is not None:
            spending = gs.spending + (
                f" (α·t^ρ, ρ = {num(gs.rho)})" if gs.spending == "power" else ""
            )
        else:
            spending = "obrien_fleming (no look yet)"
        rows.append(Fact("Spending (Lan–DeMets)", spending))
    if exp.dimensions:
        rows.append(Fact("Dimensions (slices)", ", ".join(exp.dimensions)))
    if exp.layer:
        rows.append(Fact("Layer", exp.layer))
    if exp.targeting:
        rows.append(Fact("Targeting", json.dumps(exp.targeting, sort_keys=True)))
    return rows


def _metric_name(inp: ReportInputs, key: str) -> str:
    m = inp.metrics.get(key)
    return m.name if m is not None else key


def _higher(inp: ReportInputs, key: str) -> bool:
    m = inp.metrics.get(key)
    return True if m is None else m.higher_is_better


def _value_label(m: MetricResultPublic, meta: MetricPublic | None) -> str:
    if m.type == "quantile":
        q = meta.quantile if meta is not None else None
        return f"p{num(100 * q)}" if q is not None else "Quantile"
    return VALUE_LABEL.get(m.type, "Mean")


def _extras(c: ComparisonPublic, base: str, cells: _Cells, mtype: str) -> list[ExtraRow]:
    def row(
        part: str,
        label: str,
        result: CupedPublic | SequentialPublic | GroupSequentialPublic,
        detail: str,
    ) -> ExtraRow:
        """A row of a method with an absolute and a relative effect at ``{base}.{part}``."""
        return ExtraRow(
            c.variant,
            label,
            cells.num(f"{base}.{part}.absolute.estimate", result.absolute.estimate),
            cells.pct(f"{base}.{part}.relative.estimate", result.relative.estimate),
            cells.ci(result.relative, "pct"),
            cells.num(f"{base}.{part}.absolute.p_value", result.absolute.p_value),
            detail,
        )

    out = []
    if c.cuped is not None:
        cu = c.cuped
        label = "CUPED (ratio, delta method)" if mtype == "ratio" else "CUPED"
        detail = f"θ = {num(cu.theta)}; variance reduction {share(cu.variance_reduction)}"
        out.append(row("cuped", label, cu, detail))
    if c.sequential is not None:
        sq = c.sequential
        out.append(row("sequential", "Sequential (always valid)", sq, f"n* = {num(sq.n_star)}"))
    if c.group_sequential is not None:
        gs = c.group_sequential
        detail = (
            f"repeated CI; bound z = {num(gs.bound)}; adjusted α {num(gs.nominal_alpha)}; "
            f"information {share(gs.information_fraction)}; "
            f"{'bound crossed' if gs.crossed else 'bound not crossed'}"
        )
        out.append(row("group_sequential", f"Group sequential, look {gs.look}", gs, detail))
    if c.bayesian is not None:
        by = c.bayesian
        out.append(
            ExtraRow(
                c.variant,
                "Bayesian",
                Cell(DASH, None, None, cells.invalid),
                cells.pct(f"{base}.bayesian.posterior_mean", by.posterior_mean),
                Cell(ci(by.ci_low, by.ci_high, "pct"), None, None, cells.invalid),
                Cell(DASH, None, None, cells.invalid),
                f"chance to beat control {share(by.chance_to_win)}; expected loss "
                f"{share(by.expected_loss)}",
            )
        )
    return out


def _metric_view(
    inp: ReportInputs, m: int, metric: MetricResultPublic, cells: _Cells
) -> MetricView:
    meta = inp.metrics.get(metric.metric)
    variants = [
        VariantRow(
            v.variant,
            cells.num(f"metrics.{m}.variants.{j}.units", v.units),
            cells.num(f"metrics.{m}.variants.{j}.mean", v.mean),
            cells.num(f"metrics.{m}.variants.{j}.sd", v.sd),
        )
        for j, v in enumerate(metric.variants)
    ]
    comps, extras = [], []
    for i, c in enumerate(metric.comparisons):
        base = f"metrics.{m}.comparisons.{i}"
        comps.append(
            ComparisonRow(
                f"{c.variant} vs {c.control}",
                c.variant,
                cells.num(f"{base}.absolute.estimate", c.absolute.estimate),
                cells.ci(c.absolute),
                cells.pct(f"{base}.relative.estimate", c.relative.estimate),
                cells.ci(c.relative, "pct"),
                cells.num(f"{base}.absolute.p_value", c.absolute.p_value),
                cells.num(f"{base}.p_value_adjusted", c.p_value_adjusted),
                yes_no(c.significant),
                [warning(w) for w in c.warnings],
            )
        )
        extras += _extras(c, base, cells, metric.type)
    note = None
    if metric.type == "quantile":
        label = _value_label(metric, meta)
        note = (
            f"Quantile metric: each arm's {label} of the per-unit values; the interval comes "
            "from order statistics (Schultzberg & Ankargren 2022), without resampling."
        )
    return MetricView(
        key=metric.metric,
        name=_metric_name(inp, metric.metric) if meta else metric.name,
        role=metric.role,
        type=metric.type,
        direction=_direction(metric.higher_is_better),
        value_label=_value_label(metric, meta),
        variants=variants,
        comparisons=comps,
        extras=extras,
        quantile_note=note,
    )


def _guardrails(inp: ReportInputs, r: ResultsPublic, cells: _Cells) -> list[GuardrailRow]:
    margins = {g.metric: g.margin for g in inp.experiment.guardrails}
    out = []
    for m, metric in enumerate(r.metrics):
        if metric.role != "guardrail":
            continue
        for i, c in enumerate(metric.comparisons):
            base = f"metrics.{m}.comparisons.{i}"
            status = c.guardrail.status if c.guardrail is not None else "unknown"
            label, kind = VERDICT.get(status, (status.upper(), "warn"))
            margin = c.guardrail.margin if c.guardrail is not None else margins.get(metric.metric)
            out.append(
                GuardrailRow(
                    name=_metric_name(inp, metric.metric),
                    key=metric.metric,
                    variant=c.variant,
                    margin=Cell(share(margin), margin, f"{base}.guardrail.margin"),
                    relative=cells.pct(f"{base}.relative.estimate", c.relative.estimate),
                    relative_ci=cells.ci(c.relative, "pct"),
                    direction=_direction(metric.higher_is_better),
                    verdict=Badge(label, "bad" if cells.invalid else kind),  # type: ignore[arg-type]
                    status_field=f"{base}.guardrail.status",
                )
            )
    return out


def _decision(exp: ExperimentPublic) -> DecisionView | None:
    d = exp.decision
    if d is None:
        return None
    return DecisionView(
        code=d.decision,
        label=RECOMMENDATION_TEXT.get(d.decision, d.decision),
        variant=d.variant,
        rationale=d.rationale,
        decided_by=d.decided_by,
        decided_at=when(d.decided_at),
    )


def _verdict(inp: ReportInputs, cells: _Cells) -> Verdict:
    r, exp = inp.results, inp.experiment
    key = exp.primary_metric.metric
    note = inp.results_note or "No results yet."
    if r is None:
        return Verdict(
            available=False,
            note=note,
            code="",
            badge=Badge("NO RESULTS", "info"),
            variant=None,
            reasons=[],
            invalid=False,
            label=note,
            primary_name=_metric_name(inp, key),
            primary_key=key,
            primary=[],
            guardrails=[],
            srm=Badge("UNKNOWN", "warn"),
            srm_p=Cell(DASH),
            srm_threshold=num(exp.analysis.srm_threshold),
            multiple_exposures=Cell(DASH),
            progress=Cell(DASH),
            progress_text=note,
            progress_bar=charts.progress_bar(None),
            units_so_far=Cell(DASH),
            needed=Cell(num(exp.sample_size_per_variant), exp.sample_size_per_variant),
            recorded=_decision(exp),
        )
    code = r.decision.recommendation
    primary: list[PrimaryLift] = []
    for m, metric in enumerate(r.metrics):
        if metric.role != "primary":
            continue
        for i, c in enumerate(metric.comparisons):
            base = f"metrics.{m}.comparisons.{i}"
            primary.append(
                PrimaryLift(
                    f"{c.variant} vs {c.control}",
                    cells.pct(f"{base}.relative.estimate", c.relative.estimate),
                    cells.ci(c.relative, "pct"),
                    cells.num(f"{base}.p_value_adjusted", c.p_value_adjusted),
                    yes_no(c.significant),
                )
            )
    srm = r.srm
    p = r.power
    return Verdict(
        available=True,
        note="",
        code=code,
        badge=Badge(RECOMMENDATION_TEXT.get(code, code).upper(), RECOMMENDATION_KIND.get(code, "")),  # type: ignore[arg-type]
        variant=r.decision.variant,
        reasons=list(r.decision.reasons),
        invalid=cells.invalid,
        label=RECOMMENDATION_TEXT.get(code, code),
        primary_name=_metric_name(inp, key),
        primary_key=key,
        primary=primary,
        guardrails=_guardrails(inp, r, cells),
        srm=Badge("MISMATCH", "bad") if srm.mismatch else Badge("OK", "good"),
        srm_p=Cell(num(srm.p_value), srm.p_value, "srm.p_value"),
        srm_threshold=num(srm.threshold),
        multiple_exposures=Cell(
            num(r.multiple_exposures), r.multiple_exposures, "multiple_exposures"
        ),
        progress=Cell(share(p.progress), p.progress, "power.progress"),
        progress_text=progress_sentence(p.units_so_far, p.sample_size_per_variant, p.progress),
        progress_bar=charts.progress_bar(p.progress),
        units_so_far=Cell(num(p.units_so_far), p.units_so_far, "power.units_so_far"),
        needed=Cell(
            num(p.sample_size_per_variant),
            p.sample_size_per_variant,
            "power.sample_size_per_variant",
        ),
        recorded=_decision(exp),
    )


def _forest(inp: ReportInputs, r: ResultsPublic, invalid: bool) -> charts.ForestPlot | None:
    rows = []
    margins = {g.metric: g.margin for g in inp.experiment.guardrails}
    for metric in r.metrics:
        up = metric.higher_is_better
        marker, mlabel = None, ""
        if metric.role == "primary":
            mde = inp.experiment.primary_metric.mde
            marker, mlabel = (mde if up else -mde), "MDE"
        elif metric.role == "guardrail" and metric.metric in margins:
            margin = margins[metric.metric]
            marker, mlabel = (-margin if up else margin), "margin"
        for c in metric.comparisons:
            rows.append(
                charts.ForestInput(
                    label=f"{_metric_name(inp, metric.metric)} · {c.variant}",
                    estimate=c.relative.estimate,
                    ci_low=c.relative.ci_low,
                    ci_high=c.relative.ci_high,
                    significant=c.significant,
                    marker=marker,
                    marker_label=f"{mlabel} {pct(marker)}" if marker is not None else "",
                    invalid=invalid,
                )
            )
    if not rows:
        return None
    return charts.forest_plot("Relative lift of every metric with its confidence interval", rows)


def _series(inp: ReportInputs, invalid: bool) -> list[SeriesView]:
    ts = inp.timeseries
    if ts is None or not ts.points:
        return []
    key = inp.experiment.primary_metric.metric
    treatments: dict[
        str, list[tuple[int, str, str, EstimatePublic, EstimatePublic | None, float | None]]
    ] = {}
    for point in ts.points:
        for m in point.metrics:
            if m.metric != key:
                continue
            for c in m.comparisons:
                seq = c.sequential.relative if c.sequential is not None else None
                treatments.setdefault(f"{c.variant} vs {c.control}", []).append(
                    (
                        point.day,
                        when(point.until),
                        f"{c.control_units:,} / {c.units:,}",
                        c.relative,
                        seq,
                        c.absolute.p_value,
                    )
                )
    out = []
    cells = _Cells(invalid)
    for label, rows in treatments.items():
        has_seq = any(s is not None for *_, s, _p in rows)
        chart = charts.lift_over_time(
            f"Cumulative relative lift of {_metric_name(inp, key)} ({label}) per day",
            charts.SeriesInput(
                label=label,
                days=[d for d, *_ in rows],
                estimate=[e.estimate for _d, _u, _n, e, _s, _p in rows],
                ci_low=[e.ci_low for _d, _u, _n, e, _s, _p in rows],
                ci_high=[e.ci_high for _d, _u, _n, e, _s, _p in rows],
                seq_low=[s.ci_low if s else None for *_, s, _p in rows] if has_seq else None,
                seq_high=[s.ci_high if s else None for *_, s, _p in rows] if has_seq else None,
            ),
        )
        days_ = [
            SeriesDay(d, u, n, cells.pct(None, e.estimate), cells.ci(e, "pct"), cells.num(None, p))
            for d, u, n, e, _s, p in rows
        ]
        out.append(SeriesView(label, chart, days_))
    return out


def _dimensions(
    inp: ReportInputs, slices: SlicesPublic | None, alpha: float, invalid: bool
) -> list[DimensionView]:
    if slices is None:
        return []
    cells = _Cells(invalid)
    out = []
    for d in slices.dimensions:
        het, differs = [], False
        for h in d.heterogeneity:
            if h.p_value is None:
                het.append(
                    f"{_metric_name(inp, h.metric)} · {h.variant}: not testable "
                    f"({h.slices} slice(s) with a usable estimate)"
                )
                continue
            found = h.p_value < alpha
            differs = differs or found
            het.append(
                f"{_metric_name(inp, h.metric)} · {h.variant}: "
                + (
                    "the effect differs between segments"
                    if found
                    else "no evidence that the effect differs between segments"
                )
                + f" (Cochran's Q = {num(h.statistic)}, df {h.df}, p = {num(h.p_value)})"
            )
        tables = []
        for m in d.metrics:
            rows = [
                SliceRow(
                    s.value,
                    Cell(num(s.units), s.units),
                    f"{c.variant} vs {c.control}",
                    cells.pct(None, c.relative.estimate),
                    cells.ci(c.relative, "pct"),
                    cells.num(None, c.p_value_adjusted),
                    yes_no(c.significant),
                    [warning(w) for w in c.warnings],
                )
                for s in m.slices
                for c in s.comparisons
            ]
            tables.append(SliceTable(m.metric, _metric_name(inp, m.metric), m.role, rows))
        out.append(DimensionView(d.dimension, het, differs, tables))
    return out


# A share link opens one experiment's report (product.md §14): the other experiments it overlaps
# with are not named there (their keys and arms are for readers with a key).
HIDDEN_OTHER = "another experiment"
HIDDEN_INTERACTION = (
    "An interaction with another running experiment was found: sign in to see which one."
)


def _interactions(inp: ReportInputs) -> list[InteractionRow]:
    out = []
    for c in inp.interactions or []:
        other = c.other if c.experiment == inp.experiment.key else c.experiment
        if inp.shared:
            other = HIDDEN_OTHER
        if c.experiment == inp.experiment.key:
            direction = f"this experiment's effect across the arms of {other}"
        else:
            direction = f"{other}'s effect across this experiment's arms"
        if c.error:
            verdict, detail = Badge("ERROR", "warn"), "the check failed (see the service log)"
        elif c.skipped:
            verdict, detail = Badge("NOT TESTED", "info"), c.skipped
        elif c.found:
            verdict, detail = Badge("INTERACTION", "bad"), "the effects do not add up independently"
        else:
            verdict, detail = (
                Badge("NONE FOUND", "good"),
                "no difference of effects at the test's level",
            )
        out.append(
            InteractionRow(
                other=other,
                direction=direction,
                metric=c.metric,
                shared_units=Cell(num(c.shared_units), c.shared_units),
                p_value=Cell(num(c.p_value), c.p_value),
                verdict=verdict,
                detail=detail,
            )
        )
    return out


def _alerts(alerts: Sequence[AlertPublic], *, shared: bool = False) -> list[AlertRow]:
    """The alerts, open first; on a share link an interaction's message (it names the other
    experiment and its arms) is replaced by :data:`HIDDEN_INTERACTION`."""
    ordered = sorted(alerts, key=lambda a: (a.resolved_at is not None, -a.id))
    return [
        AlertRow(
            id=a.id,
            type=a.type.value,
            label=ALERT_TEXT.get(a.type.value, a.type.value),
            phase=a.phase,
            raised=when(a.created_at),
            state="open"
            if a.resolved_at is None
            else f"resolved by {a.resolved_by or DASH}, {when(a.resolved_at)}",
            open=a.resolved_at is None,
            message=HIDDEN_INTERACTION if shared and a.type == AlertType.interaction else a.message,
        )
        for a in ordered
    ]


def _plan(plan: Plan) -> list[tuple[str, Cell, str, str]]:
    actual = ", ".join(f"{k}: {v:,}" for k, v in plan.actual_per_variant.items()) or DASH
    return [
        (
            "Sample size per variant",
            Cell(
                num(plan.planned_per_variant), plan.planned_per_variant, "sample_size_per_variant"
            ),
            actual,
            yes_no(plan.sample_reached),
        ),
        (
            "Duration (days)",
            Cell(num(plan.planned_days), plan.planned_days, "planned_duration_days"),
            days(plan.actual_days),
            yes_no(plan.duration_reached),
        ),
    ]


def build_report(inp: ReportInputs) -> ReportView:
    """The view of one report (pure: no database, no clock but ``inp.generated_at``)."""
    exp, r = inp.experiment, inp.results
    plan = plan_vs_actual(exp, r, inp.generated_at)
    deviations = (
        inp.deviations
        if inp.deviations is not None
        else find_deviations(exp, inp.audit, r, inp.generated_at)
    )
    invalid = r is not None and r.srm.mismatch
    cells = _Cells(invalid)
    note = inp.results_note or "No results yet."
    metrics = (
        [_metric_view(inp, m, metric, cells) for m, metric in enumerate(r.metrics)] if r else []
    )
    slices = r.slices if isinstance(r, SnapshotResultsPublic) else None
    srm_rows: list[tuple[str, Cell, Cell, Cell]] = []
    if r is not None:
        total = sum(r.srm.observed.values())
        for v in list(r.srm.expected) or list(r.srm.observed):
            w = r.srm.expected.get(v)
            srm_rows.append(
                (
                    v,
                    Cell(num(r.srm.observed.get(v)), r.srm.observed.get(v), f"srm.observed.{v}"),
                    Cell(share(w), w, f"srm.expected.{v}"),
                    Cell(num(round(total * w)) if w is not None else DASH),
                )
            )
    n_open = sum(1 for a in inp.alerts if a.resolved_at is None)
    decision = _decision(exp)
    differs = False
    if decision is not None and r is not None:
        differs = decision.code != r.decision.recommendation or (
            decision.code == "ship" and decision.variant != r.decision.variant
        )
    gs = r.group_sequential if r is not None else None
    looks = [
        LookRow(
            lk.look,
            Cell(share(lk.information_fraction), lk.information_fraction),
            Cell(num(lk.bound), lk.bound),
            Cell(num(lk.nominal_alpha), lk.nominal_alpha),
            Cell(num(lk.alpha_spent), lk.alpha_spent),
        )
        for lk in (gs.looks if gs is not None else [])
    ]
    if inp.interactions is None:
        inter_note = (
            inp.interactions_note or "The interaction check runs only for running experiments."
        )
    elif not inp.interactions:
        inter_note = "No running experiment shares units with this one."
    else:
        inter_note = (
            "Every running experiment that shares units with this one, checked both ways for a "
            "difference of the primary metric's lift across the other's arms (Bonferroni over "
            "each pair's tests)."
        )
    series = _series(inp, invalid)
    series_note = (
        inp.timeseries_note
        or (
            "Cumulative relative lift of the primary metric at the end of each day since the phase "
            "started, with its confidence interval (shaded)"
            + (
                "; the dotted band is the confidence sequence."
                if exp.analysis.method == "sequential"
                else "."
            )
        )
        if series
        else inp.timeseries_note or "No day has ended yet: the series starts after the first day."
    )
    return ReportView(
        key=exp.key,
        title=exp.title,
        status=exp.status.value,
        owner=exp.owner,
        tags=list(exp.tags),
        header=[
            Fact("Key", exp.key),
            Fact("Status", exp.status.value),
            Fact("Owner", exp.owner),
            Fact("Phase", f"{exp.phase} of {max(len(exp.phases), 1)}"),
            Fact("Started", when(exp.started_at)),
            Fact("Stopped", when(exp.stopped_at)),
            Fact("Results computed", when(r.computed_at) if r is not None else DASH),
        ],
        generated_at=when(inp.generated_at),
        shared=inp.shared,
        verdict=_verdict(inp, cells),
        series=series,
        series_note=series_note,
        forest=_forest(inp, r, invalid) if r is not None else None,
        scorecard_intro=(
            f"{round(100 * (1 - exp.alpha))}% confidence intervals; p-values adjusted by "
            f"{exp.analysis.correction} over the primary and secondary comparisons (guardrails "
            "are outside the family)."
        ),
        metrics=metrics,
        results_note=note if r is None else "",
        dimensions=_dimensions(inp, slices, exp.alpha, invalid),
        slices_note=(
            slices.note
            if slices is not None
            else "The protocol names no dimensions to slice by."
            if not exp.dimensions
            else "No slices in this snapshot yet."
        ),
        srm_rows=srm_rows,
        alerts=_alerts(inp.alerts, shared=inp.shared),
        alert_summary=f"{n_open} open, {len(inp.alerts) - n_open} resolved",
        registration=_registration(inp),
        hypothesis=_hypothesis(exp.hypothesis),
        description=exp.description,
        variants=[
            (
                v.key,
                v.name or "",
                Cell(share(v.weight), v.weight, f"variants.{i}.weight"),
                "control" if v.is_control else "",
            )
            for i, v in enumerate(exp.variants)
        ],
        protocol_metrics=[
            (
                "primary",
                exp.primary_metric.metric,
                _metric_name(inp, exp.primary_metric.metric),
                _direction(_higher(inp, exp.primary_metric.metric)),
                f"MDE {share(exp.primary_metric.mde)}",
            ),
            *(
                ("secondary", k, _metric_name(inp, k), _direction(_higher(inp, k)), DASH)
                for k in exp.secondary_metrics
            ),
            *(
                (
                    "guardrail",
                    g.metric,
                    _metric_name(inp, g.metric),
                    _direction(_higher(inp, g.metric)),
                    f"margin {share(g.margin)}",
                )
                for g in exp.guardrails
            ),
        ],
        settings=_settings(inp),
        looks=looks,
        plan=_plan(plan),
        deviations=deviations,
        decision=decision,
        decision_differs=differs,
        interactions=_interactions(inp),
        interactions_note=inter_note,
    )


# ---------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class IndexRow:
    """One experiment on the index page."""

    key: str
    title: str
    owner: str
    status: str
    srm: str  # "ok", "mismatch" or "" when unknown
    multiple_exposures: int | None
    recommendation: str | None
    progress: float | None
    open_alerts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    created_at: str = ""
    decision: str | None = None

    @property
    def recommendation_badge(self) -> Badge:
        if self.recommendation is None:
            return Badge(DASH)
        return Badge(
            RECOMMENDATION_TEXT.get(self.recommendation, self.recommendation),
            RECOMMENDATION_KIND.get(self.recommendation, ""),  # type: ignore[arg-type]
        )

    @property
    def progress_text(self) -> str:
        return share(self.progress)

    @property
    def alerts_text(self) -> str:
        return open_alert_text(self.open_alerts)


def open_alert_text(types: Sequence[str]) -> str:
    """``2 open: srm, guardrail_failed ×2`` — the count, then each type once with its count."""
    if not types:
        return "none"
    counts: dict[str, int] = {}
    for t in types:
        counts[t] = counts.get(t, 0) + 1
    order = list(ALERT_TEXT)
    parts = [
        t if c == 1 else f"{t} ×{c}"
        for t, c in sorted(
            counts.items(), key=lambda x: (order.index(x[0]) if x[0] in order else 99, x[0])
        )
    ]
    return f"{len(types)} open: " + ", ".join(parts)
