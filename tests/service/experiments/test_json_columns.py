"""The protocol's JSON columns are checked against their stored forms when written and read,
and store and return the value exactly as given."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError


def test_a_stored_protocol_reads_back_exactly_as_written(client, admin, make_experiment, engine):
    from sqlmodel import Session, select

    from service.experiments.models import Experiment

    make_experiment("typed-columns")
    with Session(engine) as session:
        exp = session.exec(select(Experiment).where(Experiment.key == "typed-columns")).one()
        assert [v["key"] for v in exp.variants] == ["control", "treatment"]
        assert isinstance(exp.variants[0], dict) and isinstance(exp.analysis, dict)
    with engine.connect() as conn:
        raw = conn.execute(
            text("SELECT variants, analysis FROM experiment WHERE key = 'typed-columns'")
        ).one()
    import json

    def loaded(v):
        return json.loads(v) if isinstance(v, str | bytes) else v

    assert loaded(raw[0]) == exp.variants  # neither converted nor completed
    assert loaded(raw[1]) == exp.analysis


def test_a_value_that_does_not_fit_its_column_is_refused_before_it_is_written(
    client, admin, make_experiment, engine
):
    from sqlmodel import Session, select

    from service.experiments.models import Experiment

    make_experiment("typed-refused")
    with Session(engine) as session:
        exp = session.exec(select(Experiment).where(Experiment.key == "typed-refused")).one()
        exp.variants = [{"key": "control", "weight": "half"}]
        session.add(exp)
        with pytest.raises(StatementError, match="does not fit"):
            session.commit()
    r = client.get("/v1/experiments/typed-refused", headers=admin)
    assert r.status_code == 200 and [v["weight"] for v in r.json()["variants"]] == [0.5, 0.5]


def test_a_stored_value_that_does_not_fit_its_column_is_refused_when_read(
    client, admin, make_experiment, engine
):
    from sqlmodel import Session, select

    from service.experiments.models import Experiment

    make_experiment("typed-corrupt")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE experiment SET guardrails = :g WHERE key = 'typed-corrupt'"),
            {"g": '[{"metric": ["not", "a", "key"]}]'},
        )
    with Session(engine) as session, pytest.raises(ValueError, match="does not fit"):
        session.exec(select(Experiment).where(Experiment.key == "typed-corrupt")).one()
