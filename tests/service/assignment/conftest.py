"""Fixtures of the assignment tests: the shared vectors, an SDK config's state in the DB."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "assignment_vectors.json"
# Tables holding experiment state, children first (emptied before each vector config is written).
STATE_TABLES = (
    "exposure_unit",
    "exposure",
    "audit_entry",
    "experiment_metric",
    "experiment_phase",
    "experiment",
    "layer",
)


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def write_config(engine: Any) -> Callable[[dict[str, Any]], None]:
    """Replace every experiment and layer in the database by the state an SDK config describes.

    The rows are written directly (the API makes its own random seeds), so the server's own
    config builder must reproduce the config from them.
    """
    from service.db import open_session, utcnow
    from service.experiments.models import Experiment, ExperimentPhase, Layer

    def write(config: dict[str, Any]) -> None:
        with engine.begin() as conn:
            for table in STATE_TABLES:
                conn.execute(text(f'DELETE FROM "{table}"'))
        with open_session(write=True) as session:
            for key, layer in config["layers"].items():
                session.add(
                    Layer(key=key, seed=layer["seed"], holdout_fraction=layer["holdout_fraction"])
                )
            for key, exp in config["experiments"].items():
                row = Experiment(
                    key=key,
                    title=key,
                    owner="tests",
                    hypothesis="vectors",
                    randomization_unit=exp["randomization_unit"],
                    variants=exp["variants"],
                    traffic_fraction=exp["traffic_fraction"],
                    targeting=exp["targeting"],
                    overrides=exp["overrides"],
                    primary_metric="conversion",
                    primary_mde=0.1,
                    analysis={},
                    layer=exp["layer"],
                    layer_range=exp["layer_range"],
                    status=exp["status"],
                    seed=exp["seed"],
                    phase=exp["phase"],
                    created_by="tests",
                    updated_at=utcnow(),
                )
                session.add(row)
                session.flush()
                assert row.id is not None
                session.add(
                    ExperimentPhase(
                        experiment_id=row.id,
                        phase=exp["phase"],
                        variants=exp["variants"],
                        traffic_fraction=exp["traffic_fraction"],
                    )
                )
            session.commit()

    return write
