"""Fixtures for the report tests: a results dict in the §6 contract and the experiment around it.

The numbers below are illustrative inputs for the renderer, not statistical references: the
renderer must show exactly what it is given, so the tests compare the page with these dicts.
They are validated against ``service.analysis.models.ResultsPublic`` in
``test_render.py::test_fixture_follows_the_results_contract``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

XSS = '<script>alert("x")</script>&'

EXPERIMENT: dict[str, Any] = {
    "key": "new-checkout",
    "title": "New checkout flow",
    "owner": "pm@example.com",
    "description": None,
    "hypothesis": {
        "change": "One-page checkout",
        "population": "All logged-in shoppers",
        "expected_outcome": "Purchases rise by 10%",
        "rationale": "Fewer steps, less abandonment",
    },
    "randomization_unit": "user_id",
    "variants": [
        {
            "key": "control",
            "name": "Current",
            "description": None,
            "weight": 0.5,
            "is_control": True,
        },
        {
            "key": "treatment",
            "name": "One page",
            "description": None,
            "weight": 0.5,
            "is_control": False,
        },
    ],
    "traffic_fraction": 1.0,
    "targeting": None,
    "overrides": {},
    "primary_metric": {"metric": "purchase", "mde": 0.1},
    "secondary_metrics": ["revenue"],
    "guardrails": [{"metric": "errors", "margin": 0.05}],
    "alpha": 0.05,
    "power": 0.8,
    "baseline": {"rate": 0.1, "mean": None, "sd": None},
    "expected_daily_units": 5000.0,
    "attribution_window_hours": None,
    "analysis": {
        "method": "fixed",
        "correction": "holm",
        "cuped": True,
        "pre_period_days": 14,
        "bayesian": True,
        "prior_mean": None,
        "prior_sd": None,
        "srm_threshold": 0.001,
        "sequential_n_star": 5000,
    },
    "layer": None,
    "layer_allocation": None,
    "layer_range": None,
    "tags": [],
    "notes": [],
    "status": "running",
    "phase": 1,
    "phases": [
        {
            "phase": 1,
            "variants": [],
            "traffic_fraction": 1.0,
            "reason": "initial protocol",
            "started_at": "2025-01-01T00:00:00Z",
            "ended_at": None,
        }
    ],
    "sample_size_per_variant": 14749,
    "planned_duration_days": 7,
    "decision": None,
    "template": None,
    "template_version": None,
    "approved_by": None,
    "created_by": "admin (key 1)",
    "created_at": "2024-12-30T10:00:00Z",
    "updated_at": "2025-01-01T00:00:00Z",
    "started_at": "2025-01-01T00:00:00Z",
    "stopped_at": None,
    "concluded_at": None,
}


def _metric(key: str, name: str, type_: str, higher: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": name,
        "description": None,
        "type": type_,
        "event": key,
        "aggregation": "sum" if type_ == "mean" else None,
        "numerator_event": None,
        "denominator_event": None,
        "higher_is_better": higher,
        "winsorize_lower": None,
        "winsorize_upper": None,
        "quantile": None,
        "created_at": "2024-12-01T00:00:00Z",
        "updated_at": "2024-12-01T00:00:00Z",
    } | extra


METRICS: dict[str, dict[str, Any]] = {
    "purchase": _metric("purchase", "Purchase", "binomial"),
    "revenue": _metric("revenue", "Revenue", "mean"),
    "errors": _metric("errors", "Checkout errors", "binomial", higher=False),
}


def _est(e: float, lo: float, hi: float, p: float) -> dict[str, Any]:
    return {"estimate": e, "ci_low": lo, "ci_high": hi, "p_value": p, "std_error": None, "df": None}


RESULTS: dict[str, Any] = {
    "experiment": "new-checkout",
    "phase": 1,
    "status": "running",
    "computed_at": "2025-01-09T00:00:00Z",
    "method": "fixed",
    "alpha": 0.05,
    "correction": "holm",
    "srm": {
        "p_value": 0.6171,
        "mismatch": False,
        "observed": {"control": 10012, "treatment": 9941},
        "expected": {"control": 0.5, "treatment": 0.5},
        "statistic": 0.2526,
        "threshold": 0.001,
        "warnings": [],
    },
    "multiple_exposures": 17,
    "overridden_units": 0,
    "units": 19953,
    "metrics": [
        {
            "metric": "purchase",
            "role": "primary",
            "type": "binomial",
            "name": "Purchase",
            "higher_is_better": True,
            "winsorized": False,
            "variants": [
                {"variant": "control", "units": 10012, "mean": 0.10077906, "sd": 0.30105},
                {"variant": "treatment", "units": 9941, "mean": 0.12091339, "sd": 0.32604},
            ],
            "comparisons": [
                {
                    "variant": "treatment",
                    "control": "control",
                    "absolute": _est(0.02013433, 0.01142, 0.02884, 5.8e-06),
                    "relative": _est(0.19978682, 0.1083, 0.2913, 1.9e-05),
                    "p_value_adjusted": 1.16e-05,
                    "significant": True,
                    "cuped": {
                        "absolute": _est(0.0201, 0.0115, 0.0287, 4.9e-06),
                        "relative": _est(0.1995, 0.1093, 0.2897, 1.4e-05),
                        "theta": 0.0412,
                        "variance_reduction": 0.0123,
                    },
                    "sequential": None,
                    "bayesian": {
                        "chance_to_win": 0.99999,
                        "expected_loss": 1.2e-07,
                        "expected_loss_control": 0.2,
                        "ci_low": 0.1083,
                        "ci_high": 0.2913,
                        "posterior_mean": 0.19978682,
                        "posterior_sd": 0.0467,
                    },
                    "guardrail": None,
                    "warnings": [],
                    "inference": "fixed",
                    "cuped_applied": True,
                }
            ],
        },
        {
            "metric": "revenue",
            "role": "secondary",
            "type": "mean",
            "name": "Revenue",
            "higher_is_better": True,
            "winsorized": False,
            "variants": [
                {"variant": "control", "units": 10012, "mean": 5.0321, "sd": 17.02},
                {"variant": "treatment", "units": 9941, "mean": 5.2113, "sd": 17.44},
            ],
            "comparisons": [
                {
                    "variant": "treatment",
                    "control": "control",
                    "absolute": _est(0.1792, -0.2993, 0.6577, 0.4628),
                    "relative": _est(0.03561, -0.0596, 0.1308, 0.4633),
                    "p_value_adjusted": 0.4628,
                    "significant": False,
                    "cuped": None,
                    "sequential": None,
                    "bayesian": None,
                    "guardrail": None,
                    "warnings": ["cuped_missing_covariate"],
                    "inference": "fixed",
                    "cuped_applied": False,
                }
            ],
        },
        {
            "metric": "errors",
            "role": "guardrail",
            "type": "binomial",
            "name": "Checkout errors",
            "higher_is_better": False,
            "winsorized": False,
            "variants": [
                {"variant": "control", "units": 10012, "mean": 0.0503, "sd": 0.2186},
                {"variant": "treatment", "units": 9941, "mean": 0.0652, "sd": 0.2469},
            ],
            "comparisons": [
                {
                    "variant": "treatment",
                    "control": "control",
                    "absolute": _est(0.0149, 0.00843, 0.02137, 6.5e-06),
                    "relative": _est(0.2962, 0.1558, 0.4366, 3.5e-05),
                    "p_value_adjusted": 6.5e-06,
                    "significant": True,
                    "cuped": None,
                    "sequential": None,
                    "bayesian": None,
                    "guardrail": {
                        "status": "fail",
                        "margin": 0.05,
                        "harm": 0.2962,
                        "p_value": 0.9999,
                        "p_value_fail": 0.0003,
                    },
                    "warnings": [],
                    "inference": "fixed",
                    "cuped_applied": False,
                }
            ],
        },
    ],
    "power": {
        "sample_size_per_variant": 14749,
        "units_so_far": 9941,
        "units_per_variant": {"control": 10012, "treatment": 9941},
        "progress": 0.674011797409994,
    },
    "decision": {
        "recommendation": "roll_back",
        "variant": None,
        "reasons": ["Guardrail errors fails for treatment: harm +29.6% beyond the 5% margin."],
    },
    "warnings": [],
}


@pytest.fixture
def fixture_experiment() -> dict[str, Any]:
    return copy.deepcopy(EXPERIMENT)


@pytest.fixture
def fixture_results() -> dict[str, Any]:
    return copy.deepcopy(RESULTS)


@pytest.fixture
def fixture_metrics() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(METRICS)


@pytest.fixture
def xss() -> str:
    return XSS


# ------------------------------------------------------------------------------ parsing helpers

import json  # noqa: E402
import re  # noqa: E402
from html.parser import HTMLParser  # noqa: E402


class _Cells(HTMLParser):
    """Collect (data-field, data-value, text) of every element carrying ``data-field``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, Any, str]] = []
        self._open: list[list[Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-field" in a and "data-value" in a:
            self._open.append([tag, a["data-field"], json.loads(a["data-value"] or "null"), ""])
        elif self._open:
            self._open[-1].append(None)  # nested tag marker (kept simple: text still collected)

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][3] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _, field, value, text, *_ = self._open.pop()
            self.cells.append((field, value, text.strip()))


class Tools:
    """Helpers to read numbers back from the rendered report."""

    @staticmethod
    def cells(html: str) -> list[tuple[str, Any, str]]:
        parser = _Cells()
        parser.feed(html)
        return parser.cells

    @staticmethod
    def resolve(obj: Any, path: str) -> Any:
        for part in path.split("."):
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        return obj

    @staticmethod
    def parse(text: str) -> tuple[float, bool]:
        """A formatted number back to a float; True when it was a percentage."""
        t = text.replace(",", "").strip()
        if t.endswith("%"):
            return float(t[:-1]) / 100.0, True
        return float(t), False

    @staticmethod
    def assert_shown(text: str, value: float) -> None:
        """The visible text equals the JSON value up to the printed precision."""
        shown, is_pct = Tools.parse(text)
        if is_pct:  # two decimals of a percentage
            assert abs(shown - value) <= 5.001e-5, (text, value)
        else:  # four significant digits
            assert abs(shown - value) <= 5.001e-4 * abs(value) + 1e-300, (text, value)

    @staticmethod
    def md_row(md: str, section: str, first_cell: str) -> list[str]:
        """Cells of the Markdown row starting with ``first_cell`` after the text ``section``."""
        start = md.index(section)
        for line in md[start:].splitlines():
            if line.startswith(f"| {first_cell} |"):
                return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        raise AssertionError(f"no row {first_cell!r} after {section!r}")

    @staticmethod
    def interval(text: str) -> tuple[float, float]:
        lo, hi = text.strip("[]").split(", ")
        return Tools.parse(lo)[0], Tools.parse(hi)[0]


@pytest.fixture
def tools() -> type[Tools]:
    return Tools
