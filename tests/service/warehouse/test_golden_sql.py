"""The aggregation rendered for the engines that cannot run here (BigQuery, Snowflake, Trino,
Databricks) and those that do: each statement parses back in its dialect, and equals its golden
file (a change of the SQL is a reviewed change of the file).

Regenerate after an intended change (from the checkout):
    TRIALBOOK_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest \
        tests/service/warehouse/test_golden_sql.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlglot

from service.analysis.aggregate import MetricSpec
from service.analysis.query import (
    DIALECTS,
    Plan,
    Side,
    counts_sql,
    counts_sums_sql,
    cuts_sql,
    order_statistics_sql,
    slice_counts_sql,
    slice_order_statistics_sql,
    sums_sql,
)

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("TRIALBOOK_REGENERATE_GOLDEN") == "1"

EXPOSURES = Side(
    columns={
        "unit_id": "user_id",
        "experiment": "experiment_key",
        "variant": "variation",
        "timestamp": "exposed_at",
        "event_id": "event_uuid",
    },
    table="analytics.exposures",
    attributes={"country": "geo_country"},
)
EVENTS = Side(
    columns={"unit_id": "user_id", "name": "event_name", "value": "revenue", "timestamp": "ts"},
    sql="SELECT user_id, event_name, revenue, ts FROM analytics.events WHERE ts >= '2026-01-01'",
)
METRICS = (
    MetricSpec("conversion", "binomial", event="purchase"),
    MetricSpec("revenue", "mean", event="purchase", winsorize_upper=0.99),
    MetricSpec("rpv", "ratio", numerator_event="purchase", denominator_event="visit"),
)
PLAN = Plan(
    experiment="new-checkout",
    phase=1,
    overrides=("u-1", "u-2"),
    window_us=72 * 3600 * 1_000_000,
    stopped_us=1_767_225_600_000_000,
    pre_us=14 * 86_400 * 1_000_000,
    until_us=1_767_312_000_000_000,
    dimensions=(("country", ("fr", "de")),),
    metrics=METRICS,
)


def statements(dialect: str) -> dict[str, str]:
    cuts = cuts_sql(dialect, EXPOSURES, EVENTS, PLAN, 1000)
    p90 = Plan(
        **{
            **PLAN.__dict__,
            "metrics": (MetricSpec("p90", "quantile", event="purchase", quantile=0.9),),
        }
    )
    quantiles = order_statistics_sql(
        dialect,
        EXPOSURES,
        EVENTS,
        p90,
        {"control": {"p90": (90, 91)}, "treatment": {"p90": (88, 89)}},
    )
    slice_quantiles = slice_order_statistics_sql(
        dialect,
        EXPOSURES,
        EVENTS,
        p90,
        {
            (0, "fr"): {"control": {"p90": (27, 28)}, "treatment": {"p90": (30, 31)}},
            (0, "other"): {"control": {"p90": (9,)}},
        },
    )
    assert cuts is not None and quantiles is not None and slice_quantiles is not None
    plain = Plan(
        **{
            **PLAN.__dict__,
            "dimensions": (),
            "metrics": tuple(m for m in METRICS if not m.winsorized),
        }
    )
    return {
        "sums": sums_sql(dialect, EXPOSURES, EVENTS, PLAN, {("revenue", "x"): (None, 120.5)})[0],
        "cuts": cuts[0],
        "counts": counts_sql(dialect, EXPOSURES, PLAN),
        "counts_sums": counts_sums_sql(dialect, EXPOSURES, EVENTS, plain)[0],
        "slice_counts": slice_counts_sql(dialect, EXPOSURES, PLAN, "country"),
        "quantiles": quantiles[0],
        "slice_quantiles": slice_quantiles[0],
    }


@pytest.mark.parametrize("engine", sorted(DIALECTS))
def test_the_rendered_aggregation_parses_back_and_matches_its_golden_file(engine: str) -> None:
    dialect = DIALECTS[engine]
    rendered = statements(dialect)
    for name, sql in rendered.items():
        tree = sqlglot.parse_one(sql, read=dialect)
        assert isinstance(tree, sqlglot.exp.Select | sqlglot.exp.Union), (engine, name)
        # nothing of the canonical form is left over
        assert "tb_epoch_us" not in sql and "tb_exposures_source" not in sql, (engine, name)
    text = "".join(f"-- {name}\n{sql};\n\n" for name, sql in rendered.items())
    path = GOLDEN / f"{engine}.sql"
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; regenerate (see the module docstring)"
    assert text == path.read_text(), (
        f"the {engine} SQL changed; if intended: TRIALBOOK_REGENERATE_GOLDEN=1 .venv/bin/python"
        " -m pytest tests/service/warehouse/test_golden_sql.py"
    )
