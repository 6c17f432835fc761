"""Deviations from the protocol, derived from the experiment, the audit trail and the results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.analysis.models import ResultsPublic
from service.experiments.models import AuditEntryOut, ExperimentPublic
from service.reports import deviations

NOW = datetime(2025, 1, 20, tzinfo=UTC)


def find_deviations(
    experiment: dict[str, Any], audit: list[dict[str, Any]], results: dict[str, Any], now: datetime
) -> list[deviations.Deviation]:
    """The deviations of the fixtures' JSON, read into the models the report passes."""
    entries = [
        AuditEntryOut.model_validate(
            {"actor": "someone", "from_status": None, "to_status": None, "note": None}
            | {"details": None}
            | a
        )
        for a in audit
    ]
    return deviations.find_deviations(
        ExperimentPublic.model_validate(experiment),
        entries,
        ResultsPublic.model_validate(results),
        now,
    )


def plan_vs_actual(
    experiment: dict[str, Any], results: dict[str, Any], now: datetime
) -> deviations.Plan:
    return deviations.plan_vs_actual(
        ExperimentPublic.model_validate(experiment), ResultsPublic.model_validate(results), now
    )


def codes(devs):
    return [d.code for d in devs]


def test_nothing_to_report_for_a_running_experiment(fixture_experiment, fixture_results):
    assert find_deviations(fixture_experiment, [], fixture_results, NOW) == []


def test_early_stop_on_a_fixed_design_is_an_early_stop_and_peeking(
    fixture_experiment, fixture_results
):
    # 9,941 of 14,749 units in the smallest arm, 2 of 7 days
    fixture_experiment["stopped_at"] = "2025-01-03T00:00:00Z"
    devs = find_deviations(fixture_experiment, [], fixture_results, NOW)
    assert codes(devs) == ["early_stop", "peeking"]
    assert "9,941 of the 14,749" in devs[0].detail and "2.0 of the 7" in devs[0].detail


def test_stopping_after_the_plan_is_no_deviation(fixture_experiment, fixture_results):
    fixture_experiment["stopped_at"] = "2025-01-10T00:00:00Z"
    fixture_results["srm"]["observed"] = {"control": 15000, "treatment": 14800}
    assert find_deviations(fixture_experiment, [], fixture_results, NOW) == []


def test_an_early_stop_on_a_sequential_design_is_allowed(fixture_experiment, fixture_results):
    fixture_experiment["analysis"]["method"] = "sequential"
    fixture_experiment["stopped_at"] = "2025-01-03T00:00:00Z"
    assert find_deviations(fixture_experiment, [], fixture_results, NOW) == []


def test_result_views_before_the_planned_end_are_peeking(fixture_experiment, fixture_results):
    audit = [
        {"at": "2025-01-02T00:00:00Z", "action": "results_viewed", "actor": "pm"},
        {"at": "2025-01-03T00:00:00Z", "action": "results_viewed", "actor": "pm"},
        {"at": "2025-01-09T00:00:00Z", "action": "results_viewed", "actor": "pm"},  # after 7 days
    ]
    devs = find_deviations(fixture_experiment, audit, fixture_results, NOW)
    assert codes(devs) == ["peeking"]
    assert "viewed 2 time(s)" in devs[0].detail


def test_metrics_added_after_the_start_come_from_the_audit_trail(
    fixture_experiment, fixture_results
):
    fixture_experiment["secondary_metrics"] = ["revenue", "aov"]
    audit = [
        {
            "at": "2024-12-31T00:00:00Z",
            "action": "update",
            "actor": "pm",  # before start: fine
            "details": {"fields": ["secondary_metrics"], "before": {"secondary_metrics": []}},
        },
        {
            "at": "2025-01-04T00:00:00Z",
            "action": "update",
            "actor": "pm (key 3)",
            "details": {
                "fields": ["secondary_metrics", "title"],
                "before": {"secondary_metrics": ["revenue"], "title": "x"},
            },
        },
    ]
    devs = find_deviations(fixture_experiment, audit, fixture_results, NOW)
    assert codes(devs) == ["metrics_added_after_start"]
    assert "adding aov" in devs[0].detail and "pm (key 3)" in devs[0].detail


def test_a_new_phase_is_reported(fixture_experiment, fixture_results):
    audit = [
        {
            "at": "2025-01-05T00:00:00Z",
            "action": "new_phase",
            "note": "fix weights",
            "details": {"phase": 2},
        }
    ]
    devs = find_deviations(fixture_experiment, audit, fixture_results, NOW)
    assert codes(devs) == ["new_phase"]
    assert "fix weights" in devs[0].detail and devs[0].title == "New phase 2"


def test_plan_vs_actual_counts_days_from_the_analysed_phase(fixture_experiment, fixture_results):
    fixture_experiment["stopped_at"] = "2025-01-04T12:00:00Z"
    plan = plan_vs_actual(fixture_experiment, fixture_results, NOW)
    assert plan.actual_days == 3.5
    assert plan.sample_reached is False and plan.duration_reached is False
    assert plan.actual_per_variant == {"control": 10012, "treatment": 9941}
