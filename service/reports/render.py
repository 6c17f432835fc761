"""Render the standardized report (HTML and Markdown) and the index page from plain data.

The renderers take a :class:`ReportContext` — the experiment's public JSON, the metric catalogue,
the results JSON of product.md §6, the deviations — and build the page with small functions and
``html.escape`` (no template engine, no external asset: one self-contained document with inline CSS
and inline SVG charts). Every user-provided string is escaped. Numeric cells of the HTML carry the
exact JSON value in ``data-value`` (and its JSON path in ``data-field``) so that tools and tests
can read the numbers without parsing the rounded text.

Section order (the same for every experiment): header, 1 protocol (with the template version the
experiment was registered under and its approval), 2 health (with the open and resolved alerts),
3 scorecard, 4 guardrails, 5 deviations, 6 recommendation and recorded decision. The index page
lists every experiment with its open alerts, then the portfolio insights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from service.reports.chart import ChartRow, Marker, ci_chart
from service.reports.deviations import Deviation, Plan, progress_fraction
from service.reports.format import DASH, ci, is_number, num, pct, reason_text, when, yes_no

SECTIONS = (
    ("protocol", "1. Protocol"),
    ("health", "2. Health"),
    ("scorecard", "3. Scorecard"),
    ("guardrails", "4. Guardrails"),
    ("deviations", "5. Deviations from the protocol"),
    ("decision", "6. Recommendation and decision"),
)
RECOMMENDATION_TEXT = {
    "ship": "Ship",
    "roll_back": "Roll back",
    "keep_running": "Keep running",
    "inconclusive": "Inconclusive",
    "invalid": "Invalid (do not use these results)",
}
HYPOTHESIS_FIELDS = ("change", "population", "expected_outcome", "rationale")


@dataclass(frozen=True)
class ReportContext:
    """Everything one report shows.

    ``experiment`` is ``ExperimentPublic`` as JSON; ``metrics`` maps metric key → catalogue JSON
    (``name``, ``type``, ``higher_is_better``, ...); ``results`` is the §6 results JSON or ``None``
    (then ``results_note`` says why).
    """

    experiment: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    results: dict[str, Any] | None
    deviations: list[Deviation]
    plan: Plan
    generated_at: datetime
    results_note: str | None = None
    audit: list[dict[str, Any]] = field(default_factory=list)
    # ``AlertPublic`` JSON of every alert of the experiment (all phases), newest first.
    alerts: list[dict[str, Any]] = field(default_factory=list)
    # ``TemplatePublic`` JSON of the template version the experiment was registered under.
    template: dict[str, Any] | None = None


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
    # The type of every open (unresolved) alert of the experiment, one entry per alert.
    open_alerts: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ shared helpers


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _json(value: Any) -> str:
    return escape(json.dumps(value), quote=True)


def _cell(path: str, value: Any, fmt: Callable[[Any], str] = num) -> str:
    """A numeric table cell with its exact JSON value in ``data-value``."""
    return (
        f'<td class="num" data-field="{_e(path)}" data-value="{_json(value)}">{_e(fmt(value))}</td>'
    )


def _ci_of(obj: Any, kind: str, fmt: Callable[[Any], str] = num) -> str:
    """The ``[ci_low, ci_high]`` text of ``obj[kind]`` (``absolute``/``relative``)."""
    return ci(_get(obj, kind, "ci_low"), _get(obj, kind, "ci_high"), fmt)


def _ci_td(obj: Any, kind: str, fmt: Callable[[Any], str] = num) -> str:
    return f'<td class="num">{_e(_ci_of(obj, kind, fmt))}</td>'


def _get(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _metric_name(ctx: ReportContext, key: str) -> str:
    m = ctx.metrics.get(key) or {}
    return str(m.get("name") or key)


def _higher_is_better(ctx: ReportContext, key: str) -> bool:
    return bool((ctx.metrics.get(key) or {}).get("higher_is_better", True))


def _guardrail_margin(ctx: ReportContext, key: str) -> float | None:
    for g in ctx.experiment.get("guardrails") or []:
        if g.get("metric") == key and is_number(g.get("margin")):
            return float(g["margin"])
    return None


def _markers(ctx: ReportContext, key: str, role: str) -> list[Marker]:
    up = _higher_is_better(ctx, key)
    if role == "primary":
        mde = _get(ctx.experiment, "primary_metric", "mde")
        if is_number(mde):
            value = float(mde) if up else -float(mde)
            return [Marker(value, f"MDE {pct(value)}")]
    if role == "guardrail":
        margin = _guardrail_margin(ctx, key)
        if margin is not None:
            value = -margin if up else margin
            return [Marker(value, f"margin {pct(value)}")]
    return []


def _chart(ctx: ReportContext, metric: dict[str, Any]) -> str:
    key = str(metric.get("metric"))
    rows = []
    for c in metric.get("comparisons") or []:
        seq = _get(c, "sequential", "relative") or {}
        rows.append(
            ChartRow(
                label=f"{c.get('variant')} vs {c.get('control')}",
                estimate=_get(c, "relative", "estimate"),
                ci_low=_get(c, "relative", "ci_low"),
                ci_high=_get(c, "relative", "ci_high"),
                significant=bool(c.get("significant")),
                seq_low=seq.get("ci_low"),
                seq_high=seq.get("ci_high"),
            )
        )
    title = f"Relative lift of {_metric_name(ctx, key)} ({key}) with its confidence interval"
    return ci_chart(title, rows, _markers(ctx, key, str(metric.get("role"))))


def _decision_differs(ctx: ReportContext) -> bool | None:
    decision = ctx.experiment.get("decision")
    rec = _get(ctx.results, "decision")
    if not isinstance(decision, dict) or not isinstance(rec, dict):
        return None
    if decision.get("decision") != rec.get("recommendation"):
        return True
    return decision.get("decision") == "ship" and decision.get("variant") != rec.get("variant")


def _hypothesis(ctx: ReportContext) -> list[tuple[str, str]] | str:
    h = ctx.experiment.get("hypothesis")
    if isinstance(h, dict):
        return [(f.replace("_", " ").capitalize(), str(h.get(f, ""))) for f in HYPOTHESIS_FIELDS]
    return str(h or "")


def _settings(ctx: ReportContext) -> list[tuple[str, str]]:
    exp = ctx.experiment
    a = exp.get("analysis") or {}
    prior = (
        f"normal(mean {num(a.get('prior_mean'))}, sd {num(a.get('prior_sd'))})"
        if a.get("prior_sd") is not None
        else "flat"
    )
    window = exp.get("attribution_window_hours")
    rows = [
        ("Randomization unit", str(exp.get("randomization_unit", ""))),
        ("Traffic fraction", pct(exp.get("traffic_fraction"), signed=False)),
        ("α (two-sided)", num(exp.get("alpha"))),
        ("Power", num(exp.get("power"))),
        ("Design", str(a.get("method", "fixed"))),
        ("Multiple-testing correction", str(a.get("correction", "holm"))),
        (
            "CUPED",
            f"on, {a.get('pre_period_days', 14)}-day pre-period" if a.get("cuped", True) else "off",
        ),
        ("Bayesian", f"on, {prior} prior" if a.get("bayesian") else "off"),
        ("SRM threshold", num(a.get("srm_threshold", 0.001))),
        ("Attribution window", f"{num(window)} h" if is_number(window) else "until stop"),
    ]
    if a.get("method") == "sequential":
        rows.append(("Sequential n*", num(a.get("sequential_n_star", 5000))))
    if a.get("method") == "group_sequential":
        rows += _group_sequential_rows(a, ctx.results)
    if exp.get("layer"):
        rows.append(("Layer", str(exp["layer"])))
    if exp.get("targeting"):
        rows.append(("Targeting", json.dumps(exp["targeting"], sort_keys=True)))
    return rows


def _group_sequential_rows(
    a: dict[str, Any], results: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """Spending function and every look so far with its adjusted α (method group_sequential)."""
    spending = str(a.get("spending", "obrien_fleming"))
    if spending == "power":
        spending += f" (α·t^ρ, ρ = {num(a.get('rho'))})"
    rows = [("Spending (Lan–DeMets)", spending)]
    design = (results or {}).get("group_sequential") or {}
    looks = [
        f"{lk.get('look')}: t = {pct(lk.get('information_fraction'), signed=False)}, bound z = "
        f"{num(lk.get('bound'))}, adjusted α = {num(lk.get('nominal_alpha'))}"
        for lk in design.get("looks") or []
    ]
    rows.append(("Looks", "; ".join(looks) if looks else "none yet"))
    return rows


def _protocol_metrics(ctx: ReportContext) -> list[tuple[str, str, str, str, str]]:
    """(role, key, name, direction, threshold) for every metric of the protocol."""
    exp = ctx.experiment
    out = []
    pm = exp.get("primary_metric") or {}
    key = str(pm.get("metric", ""))

    def direction(k: str) -> str:
        return "higher is better" if _higher_is_better(ctx, k) else "lower is better"

    out.append(
        (
            "primary",
            key,
            _metric_name(ctx, key),
            direction(key),
            f"MDE {pct(pm.get('mde'), signed=False)}",
        )
    )
    for k in exp.get("secondary_metrics") or []:
        out.append(("secondary", k, _metric_name(ctx, k), direction(k), DASH))
    for g in exp.get("guardrails") or []:
        k = str(g.get("metric"))
        out.append(
            (
                "guardrail",
                k,
                _metric_name(ctx, k),
                direction(k),
                f"margin {pct(g.get('margin'), signed=False)}",
            )
        )
    return out


def _days(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def _rules_text(rules: dict[str, Any]) -> str:
    """The rules of a template version in one line."""
    out = [
        f"guards {g.get('metric')} with margin ≤ {pct(g.get('max_margin'), signed=False)}"
        for g in rules.get("required_guardrails") or []
    ]
    if rules.get("minimum_duration_days") is not None:
        out.append(f"runs at least {rules['minimum_duration_days']} days")
    if rules.get("allowed_primary_metrics") is not None:
        out.append("primary metric one of " + ", ".join(rules["allowed_primary_metrics"]))
    if rules.get("require_structured_hypothesis"):
        out.append("structured hypothesis")
    if rules.get("max_secondary_metrics") is not None:
        out.append(f"at most {rules['max_secondary_metrics']} secondary metric(s)")
    if rules.get("approval_required"):
        out.append("approval by another editor before start")
    return "; ".join(out) or "no rules"


def _approval_entry(ctx: ReportContext) -> dict[str, Any] | None:
    """The audit entry of the approval in force (the latest ``approve``)."""
    entries = [a for a in ctx.audit if a.get("action") == "approve"]
    return entries[-1] if entries else None


def _registration(ctx: ReportContext) -> list[tuple[str, str]]:
    """(label, text) rows: the template version and the approval, the same rows for every
    experiment."""
    exp = ctx.experiment
    tpl = ctx.template or {}
    rules = tpl.get("rules") or {}
    if exp.get("template"):
        template = f"{exp['template']} v{exp.get('template_version')}"
        if tpl.get("name"):
            template += f" — {tpl['name']}"
        latest = tpl.get("latest_version")
        if is_number(latest) and latest != exp.get("template_version"):
            template += f" (the template is now at v{latest}; this experiment keeps its version)"
        rows = [("Template", template), ("Template rules", _rules_text(rules))]
    else:
        rows = [("Template", "none"), ("Template rules", "none")]
    approver = exp.get("approved_by")
    if approver:
        entry = _approval_entry(ctx) or {}
        text = f"approved by {approver}"
        if entry.get("at"):
            text += f", {when(entry['at'])}"
        if entry.get("note"):
            text += f" — “{entry['note']}”"
    elif rules.get("approval_required"):
        text = (
            "required before start, not given yet"
            if exp.get("status") == "draft"
            else "required; not on record"
        )
    else:
        text = "not required"
    rows.append(("Approval", text))
    return rows


ALERT_TEXT = {
    "srm": "Sample ratio mismatch",
    "guardrail_failed": "Guardrail failed",
    "decision_ready": "Decision ready",
    "overdue": "Overdue",
    "stalled": "Exposures stalled",
    "interaction": "Interaction with another experiment",
}


def _alert_order(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open alerts first, then resolved ones; newest first within each."""
    return sorted(alerts, key=lambda a: (a.get("resolved_at") is not None, -int(a.get("id") or 0)))


def _alert_state(a: dict[str, Any]) -> str:
    if a.get("resolved_at") is None:
        return "open"
    return f"resolved by {a.get('resolved_by') or DASH}, {when(a.get('resolved_at'))}"


def _alert_summary(alerts: list[dict[str, Any]]) -> str:
    n_open = sum(1 for a in alerts if a.get("resolved_at") is None)
    return f"{n_open} open, {len(alerts) - n_open} resolved"


def open_alert_text(types: tuple[str, ...] | list[str]) -> str:
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


# ---------------------------------------------------------------------------------------- HTML

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: #111; background: #fff; margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; border-bottom: 2px solid #111; padding-bottom: 3px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid #999; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eee; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 6px 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.badge { display: inline-block; border: 1.5px solid #111; border-radius: 3px; padding: 0 6px;
         font-weight: 700; font-size: 12px; letter-spacing: .02em; }
.badge.bad { background: #111; color: #fff; }
.badge.warn { border-style: dashed; }
.muted { color: #555; }
.metric { border-top: 1px solid #ccc; padding-top: 4px; break-inside: avoid; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.box { border: 1.5px solid #111; padding: 8px 12px; }
.flag { border: 2px dashed #111; padding: 6px 10px; margin-top: 10px; font-weight: 600; }
svg.ci-chart, svg.progress { display: block; max-width: 100%; height: auto; }
footer { margin-top: 32px; font-size: 12px; color: #555; }
@media print {
  @page { margin: 14mm; }
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  section, .metric, table, svg { break-inside: avoid; }
  th { background: #eee; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .badge.bad { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: #000; text-decoration: none; }
}
"""


def _facts(rows: list[tuple[str, str]], cls: str = "facts") -> str:
    inner = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="{cls}">{inner}</dl>'


def _badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _html_header(ctx: ReportContext) -> str:
    exp = ctx.experiment
    phases = exp.get("phases") or []
    facts = [
        ("Key", str(exp.get("key", ""))),
        ("Status", str(exp.get("status", ""))),
        ("Owner", str(exp.get("owner", ""))),
        ("Phase", f"{exp.get('phase', 1)} of {max(len(phases), 1)}"),
        ("Created", when(exp.get("created_at"))),
        ("Started", when(exp.get("started_at"))),
        ("Stopped", when(exp.get("stopped_at"))),
        ("Concluded", when(exp.get("concluded_at"))),
    ]
    return (
        f'<header id="header"><h1>{_e(exp.get("title"))}</h1>'
        f'<p class="muted">Experiment report · generated {_e(when(ctx.generated_at))}</p>'
        f"{_facts(facts)}</header>"
    )


def _html_protocol(ctx: ReportContext) -> str:
    exp = ctx.experiment
    parts = ['<h3>Registration</h3><div id="registration">', _facts(_registration(ctx)), "</div>"]
    parts.append("<h3>Hypothesis</h3>")
    h = _hypothesis(ctx)
    parts.append(_facts(h) if isinstance(h, list) else f'<p class="hypothesis">{_e(h)}</p>')
    if exp.get("description"):
        parts.append(f"<p>{_e(exp['description'])}</p>")
    rows = "".join(
        f"<tr><td>{_e(v.get('key'))}</td><td>{_e(v.get('name') or '')}</td>"
        + _cell(f"variants.{i}.weight", v.get("weight"), lambda w: pct(w, signed=False))
        + f"<td>{'control' if v.get('is_control') else ''}</td></tr>"
        for i, v in enumerate(exp.get("variants") or [])
    )
    parts.append(
        "<h3>Variants</h3><table><thead><tr><th>Variant</th><th>Name</th><th>Weight</th>"
        f"<th>Role</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    mrows = "".join(
        f"<tr><td>{_e(role)}</td><td><code>{_e(k)}</code></td><td>{_e(name)}</td>"
        f"<td>{_e(d)}</td><td>{_e(t)}</td></tr>"
        for role, k, name, d, t in _protocol_metrics(ctx)
    )
    parts.append(
        "<h3>Metrics</h3><table><thead><tr><th>Role</th><th>Metric</th><th>Name</th>"
        f"<th>Direction</th><th>MDE / margin</th></tr></thead><tbody>{mrows}</tbody></table>"
    )
    parts.append("<h3>Analysis settings</h3>" + _facts(_settings(ctx)))
    p = ctx.plan
    actual = ", ".join(f"{k}: {v:,}" for k, v in p.actual_per_variant.items()) or DASH
    plan_rows = (
        "<tr><td>Sample size per variant</td>"
        + _cell("sample_size_per_variant", p.planned_per_variant)
        + f"<td>{_e(actual)}</td><td>{_e(yes_no(p.sample_reached))}</td></tr>"
        + "<tr><td>Duration (days)</td>"
        + _cell("planned_duration_days", p.planned_days)
        + f'<td class="num">{_e(_days(p.actual_days))}</td>'
        + f"<td>{_e(yes_no(p.duration_reached))}</td></tr>"
    )
    parts.append(
        "<h3>Plan vs actual</h3><table><thead><tr><th></th><th>Planned</th><th>Actual</th>"
        f"<th>Reached</th></tr></thead><tbody>{plan_rows}</tbody></table>"
    )
    return "".join(parts)


def _progress_svg(progress: float | None) -> str:
    width, height = 320, 20
    frac = 0.0 if progress is None else max(0.0, min(progress, 1.0))
    label = DASH if progress is None else f"{progress:.0%} of the planned sample"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="progress" role="img" '
        f'width="{width + 190}" '
        f'height="{height}" viewBox="0 0 {width + 190} {height}" aria-label="{_e(label)}">'
        f'<rect x="0.5" y="0.5" width="{width}" height="{height - 1}" fill="#fff" stroke="#000"/>'
        f'<rect x="0.5" y="0.5" width="{frac * width:.1f}" height="{height - 1}" fill="#777"/>'
        f'<text x="{width + 8}" y="{height - 5}" font-size="12">{_e(label)}</text></svg>'
    )


def _multiple_exposures(results: dict[str, Any]) -> Any:
    me = results.get("multiple_exposures")
    if isinstance(me, dict):
        return me.get("units", me.get("count"))
    return me


def _expected_units(total: float, weight: Any) -> str:
    return num(round(total * float(weight))) if is_number(weight) else DASH


def _html_alerts(ctx: ReportContext) -> str:
    head = f'<h3>Alerts</h3><p id="alert-summary">{_e(_alert_summary(ctx.alerts))}</p>'
    if not ctx.alerts:
        return head + '<p class="muted" id="no-alerts">No alert has been raised.</p>'
    rows = "".join(
        f'<tr data-alert-id="{_e(a.get("id"))}" data-type="{_e(a.get("type"))}" '
        f'data-state="{"open" if a.get("resolved_at") is None else "resolved"}">'
        f"<td>{_badge(str(a.get('type')), 'bad' if a.get('resolved_at') is None else '')}"
        f" {_e(ALERT_TEXT.get(str(a.get('type')), ''))}</td>"
        f'<td class="num">{_e(a.get("phase"))}</td><td>{_e(when(a.get("created_at")))}</td>'
        f"<td>{_e(_alert_state(a))}</td><td>{_e(a.get('message'))}</td></tr>"
        for a in _alert_order(ctx.alerts)
    )
    return (
        head + '<table id="alerts"><thead><tr><th>Type</th><th>Phase</th><th>Raised at</th>'
        f"<th>State</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _html_health(ctx: ReportContext) -> str:
    return _html_health_results(ctx) + _html_alerts(ctx)


def _html_health_results(ctx: ReportContext) -> str:
    r = ctx.results
    if r is None:
        return f'<p class="muted">{_e(ctx.results_note or "No results yet.")}</p>'
    srm = r.get("srm") or {}
    observed = srm.get("observed") or {}
    expected = srm.get("expected") or {}
    total = sum(v for v in observed.values() if is_number(v))
    rows = "".join(
        f"<tr><td>{_e(v)}</td>"
        + _cell(f"srm.observed.{v}", observed.get(v))
        + _cell(f"srm.expected.{v}", expected.get(v), lambda w: pct(w, signed=False))
        + f'<td class="num">{_e(_expected_units(total, expected.get(v)))}</td>'
        + "</tr>"
        for v in (list(expected) or list(observed))
    )
    verdict = (
        (_badge("MISMATCH", "bad") if srm.get("mismatch") else _badge("OK"))
        if "mismatch" in srm
        else _badge("UNKNOWN", "warn")
    )
    me = _multiple_exposures(r)
    power = r.get("power") or {}
    progress = progress_fraction(r)
    return (
        "<h3>Sample ratio mismatch (SRM)</h3>"
        f'<p id="srm-verdict">Verdict: {verdict} · χ² p-value '
        f'<span data-field="srm.p_value" data-value="{_json(srm.get("p_value"))}">'
        f"{_e(num(srm.get('p_value')))}</span> (threshold "
        f"{_e(num((ctx.experiment.get('analysis') or {}).get('srm_threshold', 0.001)))})</p>"
        "<table><thead><tr><th>Variant</th><th>Units</th><th>Expected share</th>"
        f"<th>Expected units</th></tr></thead><tbody>{rows}</tbody></table>"
        "<h3>Multiple exposures</h3>"
        f'<p id="multiple-exposures"><span data-field="multiple_exposures" '
        f'data-value="{_json(me)}">{_e(num(me))}</span> unit(s) saw more than one variant '
        "and are excluded from the analysis"
        + (" " + _badge("CHECK", "warn") if is_number(me) and me > 0 else "")
        + "</p><h3>Power progress</h3>"
        + _progress_svg(progress)
        + "<p>"
        + f'Units so far (smallest arm) <span data-field="power.units_so_far" '
        f'data-value="{_json(power.get("units_so_far"))}">{_e(num(power.get("units_so_far")))}'
        "</span> · needed per variant "
        f'<span data-field="power.sample_size_per_variant" '
        f'data-value="{_json(power.get("sample_size_per_variant"))}">'
        f"{_e(num(power.get('sample_size_per_variant')))}</span> · progress "
        f'<span data-field="power.progress" data-value="{_json(power.get("progress"))}">'
        f"{_e(pct(progress, signed=False))}</span></p>"
    )


def _extras_rows(m: int, c: dict[str, Any], i: int) -> str:
    base = f"metrics.{m}.comparisons.{i}"
    out = []
    cu = c.get("cuped")
    if isinstance(cu, dict):
        out.append(
            f"<tr><td>{_e(c.get('variant'))}</td><td>CUPED</td>"
            + _cell(f"{base}.cuped.absolute.estimate", _get(cu, "absolute", "estimate"))
            + _cell(f"{base}.cuped.relative.estimate", _get(cu, "relative", "estimate"), pct)
            + _ci_td(cu, "relative", pct)
            + _cell(f"{base}.cuped.absolute.p_value", _get(cu, "absolute", "p_value"))
            + f"<td>θ = {_e(num(cu.get('theta')))}; variance reduction "
            f"{_e(pct(cu.get('variance_reduction'), signed=False))}</td></tr>"
        )
    sq = c.get("sequential")
    if isinstance(sq, dict):
        out.append(
            f"<tr><td>{_e(c.get('variant'))}</td><td>Sequential (always valid)</td>"
            + _cell(f"{base}.sequential.absolute.estimate", _get(sq, "absolute", "estimate"))
            + _cell(f"{base}.sequential.relative.estimate", _get(sq, "relative", "estimate"), pct)
            + _ci_td(sq, "relative", pct)
            + _cell(f"{base}.sequential.absolute.p_value", _get(sq, "absolute", "p_value"))
            + f"<td>n* = {_e(num(sq.get('n_star')))}</td></tr>"
        )
    gs = c.get("group_sequential")
    if isinstance(gs, dict):
        out.append(
            f"<tr><td>{_e(c.get('variant'))}</td><td>Group sequential, look "
            f"{_e(gs.get('look'))}</td>"
            + _cell(f"{base}.group_sequential.absolute.estimate", _get(gs, "absolute", "estimate"))
            + _cell(
                f"{base}.group_sequential.relative.estimate", _get(gs, "relative", "estimate"), pct
            )
            + _ci_td(gs, "relative", pct)
            + _cell(f"{base}.group_sequential.absolute.p_value", _get(gs, "absolute", "p_value"))
            + f"<td>bound z = {_e(num(gs.get('bound')))}; adjusted α "
            f"{_e(num(gs.get('nominal_alpha')))}; "
            f"{'crossed' if gs.get('crossed') else 'not crossed'}</td></tr>"
        )
    by = c.get("bayesian")
    if isinstance(by, dict):
        out.append(
            f"<tr><td>{_e(c.get('variant'))}</td><td>Bayesian</td>"
            + f'<td class="num">{DASH}</td>'
            + _cell(f"{base}.bayesian.posterior_mean", by.get("posterior_mean"), pct)
            + f'<td class="num">{_e(ci(by.get("ci_low"), by.get("ci_high"), pct))}</td>'
            + f'<td class="num">{DASH}</td>'
            + f"<td>chance to beat control {_e(pct(by.get('chance_to_win'), signed=False))}; "
            f"expected loss {_e(pct(by.get('expected_loss'), signed=False))}</td></tr>"
        )
    return "".join(out)


def _html_metric(ctx: ReportContext, m: int, metric: dict[str, Any]) -> str:
    key = str(metric.get("metric"))
    role = str(metric.get("role"))
    vrows = "".join(
        f"<tr><td>{_e(v.get('variant'))}</td>"
        + _cell(f"metrics.{m}.variants.{j}.units", v.get("units"))
        + _cell(f"metrics.{m}.variants.{j}.mean", v.get("mean"))
        + _cell(f"metrics.{m}.variants.{j}.sd", v.get("sd"))
        + "</tr>"
        for j, v in enumerate(metric.get("variants") or [])
    )
    crows = []
    extras = []
    for i, c in enumerate(metric.get("comparisons") or []):
        base = f"metrics.{m}.comparisons.{i}"
        sig = c.get("significant")
        warnings = ", ".join(str(w) for w in c.get("warnings") or []) or ""
        crows.append(
            f"<tr><td>{_e(c.get('variant'))} vs {_e(c.get('control'))}</td>"
            + _cell(f"{base}.absolute.estimate", _get(c, "absolute", "estimate"))
            + _ci_td(c, "absolute")
            + _cell(f"{base}.relative.estimate", _get(c, "relative", "estimate"), pct)
            + _ci_td(c, "relative", pct)
            + _cell(f"{base}.absolute.p_value", _get(c, "absolute", "p_value"))
            + _cell(f"{base}.p_value_adjusted", c.get("p_value_adjusted"))
            + f"<td>{_badge('SIGNIFICANT') if sig else _e(yes_no(sig))}</td>"
            + f"<td>{_e(warnings)}</td></tr>"
        )
        extras.append(_extras_rows(m, c, i))
    extra_html = "".join(extras)
    if extra_html:
        extra_html = (
            '<table class="extras"><thead><tr><th>Variant</th><th>Method</th><th>Absolute</th>'
            "<th>Relative</th><th>Relative CI</th><th>p</th><th>Notes</th></tr></thead>"
            f"<tbody>{extra_html}</tbody></table>"
        )
    unit = (
        "rate"
        if metric.get("type") == "binomial"
        else "ratio"
        if metric.get("type") == "ratio"
        else "quantile"
        if metric.get("type") == "quantile"
        else "mean"
    )
    return (
        f'<article class="metric" id="metric-{_e(key)}" data-role="{_e(role)}">'
        f"<h3>{_e(_metric_name(ctx, key))} <code>{_e(key)}</code> · {_e(role)} · "
        f"{_e(metric.get('type'))} · "
        f"{'higher' if _higher_is_better(ctx, key) else 'lower'} is better</h3>"
        f"<table><thead><tr><th>Variant</th><th>Units</th><th>{unit.capitalize()}</th>"
        f"<th>SD</th></tr></thead><tbody>{vrows}</tbody></table>"
        '<table class="scorecard"><thead><tr><th>Comparison</th><th>Absolute</th>'
        "<th>Absolute CI</th>"
        "<th>Relative</th><th>Relative CI</th><th>p</th><th>Adjusted p</th><th>Significant</th>"
        f"<th>Warnings</th></tr></thead><tbody>{''.join(crows)}</tbody></table>"
        f"{extra_html}{_chart(ctx, metric)}</article>"
    )


def _html_scorecard(ctx: ReportContext) -> str:
    r = ctx.results
    if r is None:
        return f'<p class="muted">{_e(ctx.results_note or "No results yet.")}</p>'
    a = ctx.experiment.get("analysis") or {}
    intro = (
        f'<p class="muted">{_e(int(100 * (1 - float(ctx.experiment.get("alpha", 0.05)))))}% '
        f"confidence intervals; p-values adjusted by {_e(a.get('correction', 'holm'))} over the "
        "primary and secondary comparisons (guardrails are outside the family).</p>"
    )
    metrics = r.get("metrics") or []
    return intro + "".join(_html_metric(ctx, m, metric) for m, metric in enumerate(metrics))


VERDICT = {
    "pass": ("PASS ✓", ""),
    "fail": ("FAIL ✗", "bad"),
    "inconclusive": ("INCONCLUSIVE ?", "warn"),
}


def _guardrail_rows(ctx: ReportContext) -> list[tuple[int, int, dict[str, Any], dict[str, Any]]]:
    out = []
    for m, metric in enumerate(_get(ctx.results, "metrics") or []):
        if metric.get("role") != "guardrail":
            continue
        for i, c in enumerate(metric.get("comparisons") or []):
            out.append((m, i, metric, c))
    return out


def _html_guardrails(ctx: ReportContext) -> str:
    if not ctx.experiment.get("guardrails"):
        return '<p class="muted">The protocol has no guardrails.</p>'
    if ctx.results is None:
        return f'<p class="muted">{_e(ctx.results_note or "No results yet.")}</p>'
    rows = []
    for m, i, metric, c in _guardrail_rows(ctx):
        g = c.get("guardrail") or {}
        status = str(g.get("status", "")) or "unknown"
        label, kind = VERDICT.get(status, (status.upper(), "warn"))
        key = str(metric.get("metric"))
        base = f"metrics.{m}.comparisons.{i}"
        rows.append(
            f"<tr><td>{_e(_metric_name(ctx, key))} <code>{_e(key)}</code></td>"
            f"<td>{_e(c.get('variant'))}</td>"
            + _cell(
                f"{base}.guardrail.margin",
                g.get("margin", _guardrail_margin(ctx, key)),
                lambda v: pct(v, signed=False),
            )
            + _cell(f"{base}.relative.estimate", _get(c, "relative", "estimate"), pct)
            + _ci_td(c, "relative", pct)
            + f"<td>{'higher' if _higher_is_better(ctx, key) else 'lower'} is better</td>"
            + f'<td data-field="{_e(base)}.guardrail.status">{_badge(label, kind)}</td></tr>'
        )
    return (
        '<p class="muted">Non-inferiority test of the relative lift against the margin: '
        "PASS = harm beyond the margin ruled out; FAIL = significant harm beyond the margin.</p>"
        "<table><thead><tr><th>Guardrail</th><th>Variant</th><th>Margin</th><th>Relative</th>"
        "<th>Relative CI</th><th>Direction</th><th>Verdict</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _html_deviations(ctx: ReportContext) -> str:
    if not ctx.deviations:
        return '<p id="no-deviations">None detected.</p>'
    items = "".join(
        f'<li data-code="{_e(d.code)}"><strong>{_e(d.title)}</strong> — {_e(d.detail)}</li>'
        for d in ctx.deviations
    )
    return f"<ul>{items}</ul>"


def _decision_label(d: dict[str, Any]) -> str:
    code = str(d.get("decision"))
    return RECOMMENDATION_TEXT.get(code, code)


def _kind(code: str) -> str:
    return "bad" if code in ("roll_back", "invalid") else ""


def _html_decision(ctx: ReportContext) -> str:
    rec = _get(ctx.results, "decision")
    if isinstance(rec, dict):
        code = str(rec.get("recommendation", ""))
        reasons = "".join(f"<li>{_e(reason_text(x))}</li>" for x in rec.get("reasons") or [])
        variant = f" — variant <code>{_e(rec['variant'])}</code>" if rec.get("variant") else ""
        left = (
            f'<div class="box" id="recommendation" data-value="{_e(code)}"><h3>Recommendation</h3>'
            f"<p>{_badge(RECOMMENDATION_TEXT.get(code, code).upper(), _kind(code))}"
            f"{variant}</p><p>Because:</p><ul>{reasons}</ul></div>"
        )
    else:
        left = (
            '<div class="box" id="recommendation"><h3>Recommendation</h3>'
            f'<p class="muted">{_e(ctx.results_note or "No results yet.")}</p></div>'
        )
    d = ctx.experiment.get("decision")
    if isinstance(d, dict):
        dv = f" — variant <code>{_e(d['variant'])}</code>" if d.get("variant") else ""
        right = (
            f'<div class="box" id="recorded-decision" data-value="{_e(d.get("decision"))}">'
            f"<h3>Recorded decision</h3><p>{_badge(_decision_label(d).upper())}{dv}</p>"
            f"<p>{_e(d.get('rationale'))}</p>"
            f'<p class="muted">by {_e(d.get("decided_by"))}, '
            f"{_e(when(d.get('decided_at')))}</p></div>"
        )
    else:
        right = (
            '<div class="box" id="recorded-decision"><h3>Recorded decision</h3>'
            '<p class="muted">No decision recorded yet (<code>POST /v1/experiments/'
            f"{_e(ctx.experiment.get('key'))}/conclude</code>).</p></div>"
        )
    flag = ""
    if _decision_differs(ctx):
        flag = (
            '<p class="flag" id="decision-differs">⚠ The recorded decision differs from the '
            "recommendation: read the rationale.</p>"
        )
    return f'<div class="pair">{left}{right}</div>{flag}'


def render_html(ctx: ReportContext) -> str:
    """Render the full report as one self-contained HTML document.

    Parameters
    ----------
    ctx : ReportContext
        The data to show.

    Returns
    -------
    str
        ``<!doctype html>`` document with inline CSS and inline SVG, no external asset.
    """
    body = {
        "protocol": _html_protocol,
        "health": _html_health,
        "scorecard": _html_scorecard,
        "guardrails": _html_guardrails,
        "deviations": _html_deviations,
        "decision": _html_decision,
    }
    sections = "".join(
        f'<section id="{sid}"><h2>{_e(title)}</h2>{body[sid](ctx)}</section>'
        for sid, title in SECTIONS
    )
    key = str(ctx.experiment.get("key", ""))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(ctx.experiment.get('title'))} — Trialbook report</title>"
        f"<style>{CSS}</style></head><body><main>{_html_header(ctx)}{sections}"
        f"<footer>Trialbook · the numbers come from <code>GET /v1/experiments/{_e(key)}/results"
        "</code> · the Markdown version is <code>?format=md</code></footer></main></body></html>"
    )


# ------------------------------------------------------------------------------------ Markdown


def _md(value: Any) -> str:
    """Escape a user string for a Markdown table cell or line."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    for ch in "`*_[]<>#":
        text = text.replace(ch, "\\" + ch)
    return text


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def render_markdown(ctx: ReportContext) -> str:
    """Render the report as Markdown, same sections and numbers as the HTML.

    Parameters
    ----------
    ctx : ReportContext
        The data to show.

    Returns
    -------
    str
        GitHub-flavoured Markdown.
    """
    exp = ctx.experiment
    lines = [f"# {_md(exp.get('title'))}", ""]
    lines += [
        f"- **Key:** {_md(exp.get('key'))}",
        f"- **Status:** {_md(exp.get('status'))}",
        f"- **Owner:** {_md(exp.get('owner'))}",
        f"- **Phase:** {_md(exp.get('phase'))}",
        f"- **Created:** {when(exp.get('created_at'))} · **Started:** {when(exp.get('started_at'))}"
        f" · **Stopped:** {when(exp.get('stopped_at'))} · **Concluded:** "
        f"{when(exp.get('concluded_at'))}",
        f"- **Generated:** {when(ctx.generated_at)}",
        "",
        "## 1. Protocol",
        "",
        "### Registration",
        "",
        *(f"- **{k}:** {_md(v)}" for k, v in _registration(ctx)),
        "",
        "### Hypothesis",
        "",
    ]
    h = _hypothesis(ctx)
    lines += [f"- **{k}:** {_md(v)}" for k, v in h] if isinstance(h, list) else [_md(h)]
    lines += ["", "### Variants", ""]
    lines += _table(
        ["Variant", "Name", "Weight", "Role"],
        [
            [
                _md(v.get("key")),
                _md(v.get("name") or ""),
                pct(v.get("weight"), signed=False),
                "control" if v.get("is_control") else "",
            ]
            for v in exp.get("variants") or []
        ],
    )
    lines += ["### Metrics", ""]
    lines += _table(
        ["Role", "Metric", "Name", "Direction", "MDE / margin"],
        [[r, _md(k), _md(n), d, t] for r, k, n, d, t in _protocol_metrics(ctx)],
    )
    lines += ["### Analysis settings", ""]
    lines += [f"- **{k}:** {_md(v)}" for k, v in _settings(ctx)] + [""]
    p = ctx.plan
    lines += ["### Plan vs actual", ""]
    lines += _table(
        ["", "Planned", "Actual", "Reached"],
        [
            [
                "Sample size per variant",
                num(p.planned_per_variant),
                ", ".join(f"{_md(k)}: {v:,}" for k, v in p.actual_per_variant.items()) or DASH,
                yes_no(p.sample_reached),
            ],
            [
                "Duration (days)",
                num(p.planned_days),
                _days(p.actual_days),
                yes_no(p.duration_reached),
            ],
        ],
    )
    lines += ["## 2. Health", ""]
    r = ctx.results
    note = _md(ctx.results_note or "No results yet.")
    if r is None:
        lines += [note, ""]
    else:
        srm = r.get("srm") or {}
        verdict = "MISMATCH" if srm.get("mismatch") else "OK"
        lines += [f"- **SRM:** {verdict} (χ² p-value {num(srm.get('p_value'))})"]
        observed = srm.get("observed") or {}
        expected = srm.get("expected") or {}
        lines += [
            f"  - {_md(v)}: {num(observed.get(v))} units, expected share "
            f"{pct(expected.get(v), signed=False)}"
            for v in (list(expected) or list(observed))
        ]
        power = r.get("power") or {}
        lines += [
            f"- **Multiple exposures:** {num(_multiple_exposures(r))} unit(s), excluded",
            f"- **Power progress:** {pct(progress_fraction(r), signed=False)} "
            "(units so far in the smallest arm "
            f"{num(power.get('units_so_far'))}, needed per variant "
            f"{num(power.get('sample_size_per_variant'))})",
            "",
        ]
    lines += ["### Alerts", "", _alert_summary(ctx.alerts), ""]
    if ctx.alerts:
        lines += _table(
            ["Type", "Phase", "Raised at", "State", "Detail"],
            [
                [
                    _md(a.get("type")),
                    _md(a.get("phase")),
                    when(a.get("created_at")),
                    _md(_alert_state(a)),
                    _md(a.get("message")),
                ]
                for a in _alert_order(ctx.alerts)
            ],
        )
    lines += ["## 3. Scorecard", ""]
    if r is None:
        lines += [note, ""]
    else:
        for metric in r.get("metrics") or []:
            key = str(metric.get("metric"))
            lines += [
                f"### {_md(_metric_name(ctx, key))} ({_md(key)}) — {metric.get('role')}, "
                f"{metric.get('type')}",
                "",
            ]
            lines += _table(
                ["Variant", "Units", "Mean", "SD"],
                [
                    [
                        _md(v.get("variant")),
                        num(v.get("units")),
                        num(v.get("mean")),
                        num(v.get("sd")),
                    ]
                    for v in metric.get("variants") or []
                ],
            )
            rows = []
            for c in metric.get("comparisons") or []:
                rows.append(
                    [
                        f"{_md(c.get('variant'))} vs {_md(c.get('control'))}",
                        num(_get(c, "absolute", "estimate")),
                        ci(_get(c, "absolute", "ci_low"), _get(c, "absolute", "ci_high")),
                        pct(_get(c, "relative", "estimate")),
                        ci(_get(c, "relative", "ci_low"), _get(c, "relative", "ci_high"), pct),
                        num(_get(c, "absolute", "p_value")),
                        num(c.get("p_value_adjusted")),
                        yes_no(c.get("significant")),
                        _md(", ".join(str(w) for w in c.get("warnings") or [])),
                    ]
                )
            lines += _table(
                [
                    "Comparison",
                    "Absolute",
                    "Absolute CI",
                    "Relative",
                    "Relative CI",
                    "p",
                    "Adjusted p",
                    "Significant",
                    "Warnings",
                ],
                rows,
            )
            for c in metric.get("comparisons") or []:
                cu, sq, by = c.get("cuped"), c.get("sequential"), c.get("bayesian")
                v = _md(c.get("variant"))
                if isinstance(cu, dict):
                    lines.append(
                        f"- CUPED ({v}): absolute {num(_get(cu, 'absolute', 'estimate'))}, "
                        "relative "
                        f"{pct(_get(cu, 'relative', 'estimate'))} "
                        f"{_ci_of(cu, 'relative', pct)}, "
                        f"p {num(_get(cu, 'absolute', 'p_value'))}, θ {num(cu.get('theta'))}, "
                        f"variance reduction {pct(cu.get('variance_reduction'), signed=False)}"
                    )
                if isinstance(sq, dict):
                    lines.append(
                        f"- Sequential ({v}): relative {pct(_get(sq, 'relative', 'estimate'))} "
                        f"{_ci_of(sq, 'relative', pct)}, "
                        f"always-valid p {num(_get(sq, 'absolute', 'p_value'))}"
                    )
                gs = c.get("group_sequential")
                if isinstance(gs, dict):
                    lines.append(
                        f"- Group sequential ({v}), look {gs.get('look')}: relative "
                        f"{pct(_get(gs, 'relative', 'estimate'))} {_ci_of(gs, 'relative', pct)} "
                        f"(repeated CI), p {num(_get(gs, 'absolute', 'p_value'))} against "
                        f"adjusted α {num(gs.get('nominal_alpha'))}: "
                        f"{'bound crossed' if gs.get('crossed') else 'bound not crossed'}"
                    )
                if isinstance(by, dict):
                    lines.append(
                        f"- Bayesian ({v}): chance to beat control "
                        f"{pct(by.get('chance_to_win'), signed=False)}, expected loss "
                        f"{pct(by.get('expected_loss'), signed=False)}, credible interval "
                        f"{ci(by.get('ci_low'), by.get('ci_high'), pct)}"
                    )
            lines.append("")
    lines += ["## 4. Guardrails", ""]
    if not exp.get("guardrails"):
        lines += ["The protocol has no guardrails.", ""]
    elif r is None:
        lines += [note, ""]
    else:
        rows = []
        for _m, _i, metric, c in _guardrail_rows(ctx):
            g = c.get("guardrail") or {}
            key = str(metric.get("metric"))
            rows.append(
                [
                    _md(key),
                    _md(c.get("variant")),
                    pct(g.get("margin", _guardrail_margin(ctx, key)), signed=False),
                    pct(_get(c, "relative", "estimate")),
                    ci(_get(c, "relative", "ci_low"), _get(c, "relative", "ci_high"), pct),
                    VERDICT.get(str(g.get("status")), (str(g.get("status", "")).upper(), ""))[0],
                ]
            )
        lines += _table(
            ["Guardrail", "Variant", "Margin", "Relative", "Relative CI", "Verdict"], rows
        )
    lines += ["## 5. Deviations from the protocol", ""]
    lines += [f"- **{_md(d.title)}** — {_md(d.detail)}" for d in ctx.deviations] or [
        "None detected."
    ]
    lines += ["", "## 6. Recommendation and decision", ""]
    rec = _get(r, "decision")
    if isinstance(rec, dict):
        code = str(rec.get("recommendation", ""))
        variant = f" (variant {_md(rec['variant'])})" if rec.get("variant") else ""
        lines += [f"**Recommendation:** {RECOMMENDATION_TEXT.get(code, code)}{variant}", ""]
        lines += [f"- {_md(reason_text(x))}" for x in rec.get("reasons") or []] + [""]
    else:
        lines += [f"**Recommendation:** {note}", ""]
    d = exp.get("decision")
    if isinstance(d, dict):
        dv = f" (variant {_md(d['variant'])})" if d.get("variant") else ""
        code = str(d.get("decision"))
        lines += [
            f"**Recorded decision:** {RECOMMENDATION_TEXT.get(code, code)}{dv} — "
            f"{_md(d.get('rationale'))} (by {_md(d.get('decided_by'))}, "
            f"{when(d.get('decided_at'))})",
            "",
        ]
    else:
        lines += ["**Recorded decision:** none yet.", ""]
    if _decision_differs(ctx):
        lines += ["> ⚠ The recorded decision differs from the recommendation.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- index


def _insight_cell(path: str, value: Any, fmt: Callable[[Any], str] = num) -> str:
    """A table cell of the insights, its exact JSON value in ``data-value`` (path in
    ``data-field``, prefixed ``insights.``)."""
    return _cell(f"insights.{path}", value, fmt)


def _share(value: Any) -> str:
    return pct(value, signed=False)


def _html_insights(insights: dict[str, Any] | None, note: str | None) -> str:
    """The portfolio-insights section of the index page (``InsightsPublic`` JSON)."""
    head = '<section id="insights"><h2>Portfolio insights</h2>'
    if insights is None:
        return head + f'<p class="muted">{_e(note or "Insights unavailable.")}</p></section>'
    by_status = insights.get("experiments_by_status") or {}
    status_rows = "".join(
        f"<tr><td>{_e(k)}</td>" + _insight_cell(f"experiments_by_status.{k}", v) + "</tr>"
        for k, v in by_status.items()
    )
    months = insights.get("concluded_per_month") or []
    month_rows = (
        "".join(
            f"<tr><td>{_e(m.get('month'))}</td>"
            + _insight_cell(f"concluded_per_month.{i}.count", m.get("count"))
            + "</tr>"
            for i, m in enumerate(months)
        )
        or f'<tr><td colspan="2" class="muted">{_e("No experiment concluded yet.")}</td></tr>'
    )
    outcomes = insights.get("outcomes") or {}
    counts = outcomes.get("counts") or {}
    shares = outcomes.get("shares") or {}
    outcome_rows = "".join(
        f"<tr><td>{_e(RECOMMENDATION_TEXT.get(d, d))}</td>"
        + _insight_cell(f"outcomes.counts.{d}", counts.get(d))
        + _insight_cell(f"outcomes.shares.{d}", shares.get(d), _share)
        + "</tr>"
        for d in counts
    )

    def rate_row(label: str, key: str, what: str) -> str:
        r = insights.get(key) or {}
        return (
            f"<tr><td>{_e(label)}</td>"
            + _insight_cell(f"{key}.share", r.get("share"), _share)
            + _insight_cell(f"{key}.numerator", r.get("numerator"))
            + _insight_cell(f"{key}.denominator", r.get("denominator"))
            + f"<td>{_e(what)}</td></tr>"
        )

    d = insights.get("duration") or {}
    rates = (
        rate_row(
            "Win rate",
            "win_rate",
            "concluded experiments where a treatment beat control significantly on the primary "
            "metric",
        )
        + rate_row("Share with SRM", "srm", "started experiments with a sample ratio mismatch")
        + rate_row(
            "Followed the recommendation",
            "followed_recommendation",
            "concluded experiments whose decision followed the recommendation at stop",
        )
    )
    return (
        head + f'<p class="muted">computed {_e(when(insights.get("computed_at")))} from the '
        "registry, the outcome snapshots taken at stop and the alerts "
        "(<code>GET /v1/insights</code>)</p>"
        '<div class="pair"><div><h3>Experiments by status</h3><table><thead><tr><th>Status</th>'
        f"<th>Experiments</th></tr></thead><tbody>{status_rows}</tbody></table></div>"
        "<div><h3>Concluded per month</h3><table><thead><tr><th>Month (UTC)</th>"
        f"<th>Concluded</th></tr></thead><tbody>{month_rows}</tbody></table></div></div>"
        "<h3>Outcomes of concluded experiments</h3><table><thead><tr><th>Decision</th>"
        f"<th>Experiments</th><th>Share</th></tr></thead><tbody>{outcome_rows}</tbody></table>"
        "<h3>Rates</h3><table><thead><tr><th></th><th>Share</th><th>Experiments</th>"
        f"<th>Out of</th><th>Counted</th></tr></thead><tbody>{rates}</tbody></table>"
        "<h3>Duration (days)</h3><table><thead><tr><th></th><th>Median planned</th>"
        "<th>Median actual</th><th>Experiments</th></tr></thead><tbody><tr>"
        "<td>stopped or concluded with a planned duration</td>"
        + _insight_cell("duration.median_planned_days", d.get("median_planned_days"))
        + _insight_cell("duration.median_actual_days", d.get("median_actual_days"))
        + _insight_cell("duration.experiments", d.get("experiments"))
        + "</tr></tbody></table><p>Stopped before the planned sample or duration: "
        f'<span data-field="insights.stopped_early" '
        f'data-value="{_json(insights.get("stopped_early"))}">'
        f"{_e(num(insights.get('stopped_early')))}</span> experiment(s).</p></section>"
    )


def render_index(
    rows: list[IndexRow],
    generated_at: datetime,
    insights: dict[str, Any] | None = None,
    insights_note: str | None = None,
) -> str:
    """Render the index page: every experiment with status, health, open alerts and
    recommendation, then the portfolio insights.

    Parameters
    ----------
    rows : list of IndexRow
        One per experiment, in the order shown.
    generated_at : datetime
        Printed in the page.
    insights : dict, optional
        ``InsightsPublic`` as JSON (``GET /v1/insights``); ``None`` shows ``insights_note``.
    insights_note : str, optional
        Why there are no insights.

    Returns
    -------
    str
        A self-contained HTML document.
    """
    trs = []
    for r in rows:
        srm = (
            _badge("MISMATCH", "bad")
            if r.srm == "mismatch"
            else _badge("OK")
            if r.srm == "ok"
            else DASH
        )
        me = DASH if r.multiple_exposures is None else f"{r.multiple_exposures:,}"
        rec = RECOMMENDATION_TEXT.get(r.recommendation or "", r.recommendation or DASH)
        trs.append(
            f'<tr data-key="{_e(r.key)}"><td><a href="/v1/experiments/{_e(r.key)}/report">'
            f"{_e(r.key)}</a></td><td>{_e(r.title)}</td><td>{_e(r.owner)}</td>"
            f"<td>{_e(r.status)}</td><td>{srm}</td>"
            f'<td class="alerts" data-open-alerts="{len(r.open_alerts)}">'
            f"{_e(open_alert_text(r.open_alerts))}</td>"
            f'<td class="num">{_e(me)}</td>'
            f'<td class="num">{_e(pct(r.progress, signed=False))}</td><td>{_e(rec)}</td></tr>'
        )
    table = (
        "<table><thead><tr><th>Experiment</th><th>Title</th><th>Owner</th><th>Status</th>"
        "<th>SRM</th><th>Open alerts</th><th>Multiple exposures</th><th>Progress</th>"
        "<th>Recommendation</th></tr>"
        f"</thead><tbody>{''.join(trs)}</tbody></table>"
        if trs
        else "<p>No experiments yet. Register one with <code>POST /v1/experiments</code> or run "
        "<code>make demo</code>.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Trialbook — experiments</title><style>{CSS}</style></head><body><main>"
        "<h1>Experiments</h1>"
        f'<p class="muted">{len(rows)} experiment(s) · generated {_e(when(generated_at))} · each '
        "report also exists as Markdown with <code>?format=md</code></p>"
        f"{table}{_html_insights(insights, insights_note)}</main></body></html>"
    )
