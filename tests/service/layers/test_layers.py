"""Layers and holdouts through the service: disjoint slices, mutual exclusion, held-out units."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from scipy.stats import chi2_contingency

N_UNITS = 20_000


def _compiled(engine: Any) -> Any:
    from service.assignment.service import ConfigCache
    from service.db import open_session

    with open_session() as session:
        return ConfigCache().get(session).compiled


def test_two_experiments_in_one_layer_never_share_a_unit(
    client: Any,
    admin: dict[str, str],
    sdk: dict[str, str],
    make_experiment: Any,
    engine: Any,
) -> None:
    layer = {"key": "checkout", "holdout_fraction": 0.1}
    assert client.post("/v1/layers", json=layer, headers=admin).status_code == 201
    first = make_experiment("slice-one", start=True, layer="checkout", layer_allocation=0.4)
    second = make_experiment("slice-two", start=True, layer="checkout", layer_allocation=0.4)
    (lo1, hi1), (lo2, hi2) = first["layer_range"], second["layer_range"]
    assert 0.1 <= lo1 < hi1 <= lo2 < hi2 <= 1.0  # disjoint, both above the holdout
    compiled = _compiled(engine)
    reasons: Counter[tuple[str, str]] = Counter()
    for i in range(N_UNITS):
        unit = f"user-{i}"
        one = compiled.evaluate("slice-one", unit)
        two = compiled.evaluate("slice-two", unit)
        assert not (one.in_experiment and two.in_experiment), unit
        reasons[(one.reason.value, two.reason.value)] += 1
    # Each experiment holds 0.4 × 0.9 = 0.36 of the layer; the rest is the holdout (0.1) and the
    # unallocated 0.18. Binomial bounds at 6 standard deviations.
    split_one = reasons[("split", "layer_excluded")] / N_UNITS
    split_two = reasons[("layer_excluded", "split")] / N_UNITS
    held = reasons[("holdout", "holdout")] / N_UNITS
    for observed, p in ((split_one, 0.36), (split_two, 0.36), (held, 0.1)):
        assert abs(observed - p) < 6 * math.sqrt(p * (1 - p) / N_UNITS), (observed, p)
    assert set(reasons) == {
        ("split", "layer_excluded"),
        ("layer_excluded", "split"),
        ("holdout", "holdout"),
        ("layer_excluded", "layer_excluded"),
    }
    # The same through HTTP on a sample.
    for i in range(200):
        got = client.post("/v1/assign", json={"unit_id": f"user-{i}"}, headers=sdk).json()
        pair = {a["experiment"]: a for a in got["assignments"]}
        assert (pair["slice-one"]["reason"], pair["slice-two"]["reason"]) == (
            compiled.evaluate("slice-one", f"user-{i}").reason.value,
            compiled.evaluate("slice-two", f"user-{i}").reason.value,
        )


def test_a_full_layer_refuses_a_third_experiment_and_a_stopped_one_frees_its_slice(
    client: Any, admin: dict[str, str], make_experiment: Any
) -> None:
    assert client.post("/v1/layers", json={"key": "tight"}, headers=admin).status_code == 201
    make_experiment("tight-a", start=True, layer="tight", layer_allocation=0.6)
    make_experiment("tight-b", layer="tight", layer_allocation=0.6)
    assert client.post("/v1/experiments/tight-b/start", headers=admin).status_code == 409
    assert client.post("/v1/experiments/tight-a/stop", headers=admin).status_code == 200
    assert client.post("/v1/experiments/tight-b/start", headers=admin).status_code == 200


def test_experiments_in_different_layers_are_independent(
    client: Any, admin: dict[str, str], make_experiment: Any, engine: Any
) -> None:
    for key in ("layer-x", "layer-y"):
        assert client.post("/v1/layers", json={"key": key}, headers=admin).status_code == 201
    make_experiment("in-x", start=True, layer="layer-x", layer_allocation=1.0)
    make_experiment("in-y", start=True, layer="layer-y", layer_allocation=1.0)
    compiled = _compiled(engine)
    table = Counter(
        (compiled.evaluate("in-x", f"u{i}").variant, compiled.evaluate("in-y", f"u{i}").variant)
        for i in range(N_UNITS)
    )
    observed = [[table[(a, b)] for b in ("control", "treatment")] for a in ("control", "treatment")]
    # Pearson χ² test of independence on the 2×2 contingency table (scipy, no continuity fudge).
    p_value = chi2_contingency(observed, correction=False).pvalue
    assert p_value > 0.001, observed
