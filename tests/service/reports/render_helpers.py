"""Build a report view from fixture JSON through the API's own models (as the service does)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.alerts.models import AlertPublic, InteractionChecked
from service.analysis.models import ResultsPublic
from service.experiments.models import AuditEntryOut, ExperimentPublic
from service.metrics.models import MetricPublic
from service.reports.view import ReportInputs, ReportView, build_report
from service.snapshots.models import SnapshotResultsPublic, TimeseriesPublic
from service.templates.models import TemplatePublic

NOW = datetime(2025, 1, 9, tzinfo=UTC)


def make_view(
    experiment: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    results: dict[str, Any] | None,
    *,
    audit: list[dict[str, Any]] | None = None,
    note: str | None = None,
    alerts: list[dict[str, Any]] | None = None,
    template: dict[str, Any] | None = None,
    timeseries: dict[str, Any] | None = None,
    interactions: list[dict[str, Any]] | None = None,
) -> ReportView:
    typed: ResultsPublic | None = None
    if results is not None:
        typed = (
            SnapshotResultsPublic.model_validate(results)
            if "snapshot_id" in results
            else ResultsPublic.model_validate(results)
        )
    return build_report(
        ReportInputs(
            experiment=ExperimentPublic.model_validate(experiment),
            metrics={k: MetricPublic.model_validate(m) for k, m in metrics.items()},
            results=typed,
            results_note=note,
            generated_at=NOW,
            audit=[AuditEntryOut.model_validate(a) for a in audit or []],
            alerts=[AlertPublic.model_validate(a) for a in alerts or []],
            template=TemplatePublic.model_validate(template) if template else None,
            timeseries=TimeseriesPublic.model_validate(timeseries) if timeseries else None,
            interactions=(
                None
                if interactions is None
                else [InteractionChecked.model_validate(i) for i in interactions]
            ),
        )
    )
