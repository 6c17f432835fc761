"""Decision rules (``product.md`` §6), one test per rule, on hand-built results."""

from __future__ import annotations

from typing import Any

from service.analysis.models import MetricResultPublic, PowerPublic, SrmPublic
from service.analysis.service import decide

NO_SRM = SrmPublic(
    p_value=0.5,
    mismatch=False,
    observed={"control": 1000, "b": 1000},
    expected={"control": 0.5, "b": 0.5},
    threshold=0.001,
)


def _estimate(x: float) -> dict[str, Any]:
    return {"estimate": x, "ci_low": x - 1, "ci_high": x + 1, "p_value": 0.01}


def _metric(
    role: str,
    *comparisons: tuple[str, float, bool],
    guardrail: str | None = None,
    higher_is_better: bool = True,
) -> MetricResultPublic:
    return MetricResultPublic.model_validate(
        {
            "metric": f"m-{role}",
            "role": role,
            "type": "mean",
            "name": role,
            "higher_is_better": higher_is_better,
            "winsorized": False,
            "variants": [],
            "comparisons": [
                {
                    "variant": v,
                    "control": "control",
                    "absolute": _estimate(est),
                    "relative": _estimate(est / 10),
                    "p_value_adjusted": 0.01 if sig else 0.5,
                    "significant": sig,
                    "guardrail": None
                    if guardrail is None
                    else {"status": guardrail, "margin": 0.05, "harm": 0.08},
                    "warnings": [],
                }
                for v, est, sig in comparisons
            ],
        }
    )


def _power(progress: float | None, needed: int | None = 1000) -> PowerPublic:
    return PowerPublic(
        sample_size_per_variant=needed,
        units_so_far=int((progress or 0) * (needed or 0)),
        units_per_variant={},
        progress=progress,
    )


def _decide(metrics: list[MetricResultPublic], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "status": "running",
        "sequential": False,
        "srm": NO_SRM,
        "power": _power(1.2),
    }
    return decide(metrics=metrics, **(args | kw))


def test_srm_mismatch_is_invalid_even_with_a_winner() -> None:
    srm = NO_SRM.model_copy(update={"mismatch": True, "p_value": 1e-6})
    d = _decide([_metric("primary", ("b", 1.0, True))], srm=srm)
    assert d.recommendation == "invalid" and d.variant is None
    assert "Sample ratio mismatch" in d.reasons[0]


def test_failing_guardrail_rolls_back_even_when_the_primary_wins() -> None:
    d = _decide(
        [
            _metric("primary", ("b", 1.0, True)),
            _metric("guardrail", ("b", -1.0, False), guardrail="fail"),
        ]
    )
    assert d.recommendation == "roll_back"
    assert any("Guardrail 'm-guardrail' fails for 'b'" in r for r in d.reasons)


def test_significantly_worse_primary_rolls_back() -> None:
    d = _decide([_metric("primary", ("b", -1.0, True))])
    assert d.recommendation == "roll_back"
    assert "significantly worse" in d.reasons[0]


def test_lower_is_better_primary_that_rises_significantly_rolls_back() -> None:
    d = _decide([_metric("primary", ("b", 1.0, True), higher_is_better=False)])
    assert d.recommendation == "roll_back"


def test_ship_the_best_significant_treatment_once_the_sample_is_reached() -> None:
    d = _decide(
        [
            _metric("primary", ("b", 1.0, True), ("c", 2.0, True), ("d", 3.0, False)),
            _metric("guardrail", ("b", 0.0, False), guardrail="pass"),
        ]
    )
    assert d.recommendation == "ship" and d.variant == "c"
    assert any("best of 2" in r for r in d.reasons)


def test_sequential_design_ships_without_the_planned_sample() -> None:
    d = _decide([_metric("primary", ("b", 1.0, True))], sequential=True, power=_power(0.2))
    assert d.recommendation == "ship" and d.variant == "b"


def test_fixed_design_keeps_running_a_winner_before_the_planned_sample() -> None:
    d = _decide([_metric("primary", ("b", 1.0, True))], power=_power(0.5))
    assert d.recommendation == "keep_running"
    assert "not reached yet" in d.reasons[0]


def test_keep_running_without_significance_before_the_sample() -> None:
    d = _decide([_metric("primary", ("b", 1.0, False))], power=_power(0.5))
    assert d.recommendation == "keep_running"


def test_inconclusive_when_the_sample_is_reached_without_significance() -> None:
    d = _decide([_metric("primary", ("b", 1.0, False))], power=_power(1.0))
    assert d.recommendation == "inconclusive"


def test_inconclusive_when_stopped_without_significance() -> None:
    d = _decide([_metric("primary", ("b", 1.0, False))], power=_power(0.3), status="stopped")
    assert d.recommendation == "inconclusive"
    assert "stopped" in d.reasons[0]


def test_fixed_design_stopped_early_with_a_winner_is_inconclusive() -> None:
    d = _decide([_metric("primary", ("b", 1.0, True))], power=_power(0.3), status="stopped")
    assert d.recommendation == "inconclusive"


def test_secondary_metrics_do_not_drive_the_decision() -> None:
    d = _decide(
        [_metric("primary", ("b", 1.0, False)), _metric("secondary", ("b", -5.0, True))],
        power=_power(0.5),
    )
    assert d.recommendation == "keep_running"
