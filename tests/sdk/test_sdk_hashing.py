"""Hash version 1: exact bytes, range, and agreement with the independent vectors."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from trialbook.hashing import (
    HASH_VERSION,
    SALT_TRAFFIC,
    SALT_VARIANT,
    experiment_hash_input,
    layer_float,
    layer_hash_input,
    override_hash,
    unit_float,
    value_hash,
)


def test_hash_input_is_the_documented_byte_string() -> None:
    assert experiment_hash_input("a1b2c3d4", 1, SALT_VARIANT, "user-1") == (
        b"tb1:a1b2c3d4:1:variant:user-1"
    )
    assert experiment_hash_input("s", 12, SALT_TRAFFIC, "é") == b"tb1:s:12:traffic:\xc3\xa9"
    assert layer_hash_input("k3j4h5", "u") == b"tb1:k3j4h5:layer:u"


def test_unit_float_matches_a_hand_computed_sha256() -> None:
    # Independent: hashlib directly, then the documented 53-bit scaling.
    digest = hashlib.sha256(b"tb1:a1b2c3d4:1:variant:user-1").digest()
    expected = (int.from_bytes(digest[:8], "big") >> 11) / 2**53
    assert unit_float("a1b2c3d4", 1, SALT_VARIANT, "user-1") == expected


def test_every_published_hash_vector_is_reproduced(vectors: dict[str, Any]) -> None:
    assert vectors["hash_version"] == HASH_VERSION == 1
    assert len(vectors["hashes"]) >= 30
    for item in vectors["hashes"]:
        fields = item["data"].split(":")
        assert fields[0] == "tb1"
        if fields[2] == "layer":
            got = layer_float(fields[1], ":".join(fields[3:]))
        else:
            got = unit_float(fields[1], int(fields[2]), fields[3], ":".join(fields[4:]))
        assert got == item["float"], item["data"]


def test_every_published_value_hash_is_reproduced(vectors: dict[str, Any]) -> None:
    assert len(vectors["value_hashes"]) >= 15
    for item in vectors["value_hashes"]:
        assert value_hash(item["seed"], item["value"]) == item["sha256"], item["data"]
        assert hashlib.sha256(item["data"].encode()).hexdigest() == item["sha256"]


def test_value_hashes_keep_the_json_type_and_compare_numbers_as_doubles() -> None:
    assert value_hash("s", "FR") == hashlib.sha256(b"tb1:s:value:s:FR").hexdigest()
    assert value_hash("s", 3) == value_hash("s", 3.0) == value_hash("s", 3.0 + 0.0)
    assert value_hash("s", 0) == value_hash("s", -0.0)
    assert len({value_hash("s", "1"), value_hash("s", 1), value_hash("s", True)}) == 3
    assert value_hash("s", "FR") != value_hash("t", "FR")  # salted by the experiment seed
    with pytest.raises(TypeError):
        value_hash("s", None)  # type: ignore[arg-type]


def test_override_hash_is_the_full_variant_digest() -> None:
    digest = hashlib.sha256(b"tb1:a1b2c3d4:1:variant:user-1").hexdigest()
    assert override_hash("a1b2c3d4", 1, "user-1") == digest
    assert override_hash("a1b2c3d4", 2, "user-1") != digest


@pytest.mark.parametrize("unit", ["", "x", "ünïcødé", "用户", "🙂", "a" * 10_000])
def test_unit_float_is_in_the_half_open_unit_interval(unit: str) -> None:
    for salt in (SALT_TRAFFIC, SALT_VARIANT):
        assert 0.0 <= unit_float("seed", 0, salt, unit) < 1.0
    assert 0.0 <= layer_float("seed", unit) < 1.0


def test_salts_and_phases_give_different_hashes() -> None:
    values = {
        unit_float("s", 1, SALT_TRAFFIC, "u"),
        unit_float("s", 1, SALT_VARIANT, "u"),
        unit_float("s", 2, SALT_VARIANT, "u"),
        layer_float("s", "u"),
    }
    assert len(values) == 4
