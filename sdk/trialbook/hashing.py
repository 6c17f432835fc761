"""Versioned, deterministic bucketing hash (``hash_version: 1``), standard library only.

Every implementation of Trialbook (this SDK, the service, other languages) must map the same
inputs to the same float; ``tests/fixtures/assignment_vectors.json`` pins it.

Hash version 1
--------------
Two kinds of hash input, each encoded as UTF-8 bytes (unit ids may be any Unicode string)::

    experiment hash:  "tb1:" + seed + ":" + str(phase) + ":" + salt + ":" + unit_id
    layer hash:       "tb1:" + layer_seed + ":layer:" + unit_id

``salt`` is ``"traffic"`` (is the unit in the traffic fraction?) or ``"variant"`` (which variant?).
The two salts make the two decisions independent, so raising the traffic fraction keeps every
unit that was already in, in the same variant. The layer hash has no phase, so a unit keeps its
layer slot when an experiment of the layer starts a new phase. ``phase`` is written in decimal
without leading zeros (``str(int)``). Seeds are server-made tokens without ``":"``, which makes the
byte string an unambiguous encoding of its fields.

The float is the top 53 bits of the SHA-256 digest read big-endian, divided by 2**53::

    x = (int.from_bytes(sha256(data).digest()[:8], "big") >> 11) / 2**53

so ``x`` is exactly representable and lies in ``[0, 1)``. A unit falls in a fraction ``f`` of a
space when ``x < f``; variants are chosen by the first cumulative weight strictly above ``x``.

Example: ``unit_float("a1b2c3d4", 1, "variant", "user-1")`` hashes the 29 bytes
``b"tb1:a1b2c3d4:1:variant:user-1"``.

Hashed values in the served config (``config_version: 2``)
----------------------------------------------------------
The service never sends an override unit id or a targeting value of ``eq``, ``neq``, ``in`` or
``not_in`` in clear; it sends the lowercase hex SHA-256 (64 characters) of a salted string, and
the SDK hashes the unit's own value the same way to compare::

    override hash:  hex(sha256("tb1:" + seed + ":" + str(phase) + ":variant:" + unit_id))
    value hash:     hex(sha256("tb1:" + seed + ":value:" + form(value)))

both UTF-8, ``seed`` and ``phase`` those of the experiment. The override hash is the full digest
of the *variant* hash input above, so an evaluation hashes the unit id once: the digest that looks
the unit up in the overrides also picks its variant. ``form`` keeps the JSON type, so that
``"1"`` never equals ``1``::

    string s:         "s:" + s
    number x:         "n:" + 16 lowercase hex digits of x as an IEEE 754 binary64, big-endian
                      (-0 written as +0; an int is converted to the nearest double first)
    boolean b:        "b:true" or "b:false"

Numbers therefore compare as doubles (``3`` equals ``3.0``, as in JSON); two integers beyond
2**53 that round to the same double compare equal. Example: ``value_hash("a1b2c3d4", "FR")`` is
the hex SHA-256 of ``b"tb1:a1b2c3d4:value:s:FR"``; ``value_hash("p0", 3)`` that of
``b"tb1:p0:value:n:4008000000000000"``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

__all__ = [
    "HASH_VERSION",
    "SALT_TRAFFIC",
    "SALT_VARIANT",
    "experiment_hash_input",
    "experiment_prefix",
    "layer_float",
    "layer_hash_input",
    "layer_prefix",
    "override_hash",
    "prefix_float",
    "unit_float",
    "value_form",
    "value_hash",
    "value_prefix",
]

HASH_VERSION: Final = 1
SALT_TRAFFIC: Final = "traffic"
SALT_VARIANT: Final = "variant"

# 2**-53: turns the top 53 bits of the digest into an exact float in [0, 1).
_SCALE: Final = 1.0 / (1 << 53)
_unpack_u64 = struct.Struct(">Q").unpack_from
_pack_double = struct.Struct(">d").pack


def experiment_prefix(seed: str, phase: int, salt: str) -> bytes:
    """Return the constant head of the experiment hash input (everything before the unit id).

    Parameters
    ----------
    seed : str
        The experiment's randomization seed.
    phase : int
        The experiment phase (a new phase re-randomizes).
    salt : str
        ``SALT_TRAFFIC`` or ``SALT_VARIANT``.

    Returns
    -------
    bytes
        ``f"tb1:{seed}:{phase}:{salt}:"`` encoded as UTF-8.
    """
    return f"tb1:{seed}:{int(phase)}:{salt}:".encode()


def layer_prefix(layer_seed: str) -> bytes:
    """Return the constant head of the layer hash input: ``f"tb1:{layer_seed}:layer:"`` (UTF-8).

    Parameters
    ----------
    layer_seed : str
        The layer's seed.

    Returns
    -------
    bytes
        The prefix to which the UTF-8 unit id is appended.
    """
    return f"tb1:{layer_seed}:layer:".encode()


def experiment_hash_input(seed: str, phase: int, salt: str, unit_id: str) -> bytes:
    """Return the exact bytes hashed for an experiment decision.

    Parameters
    ----------
    seed, phase, salt
        See :func:`experiment_prefix`.
    unit_id : str
        The randomization unit id.

    Returns
    -------
    bytes
        ``experiment_prefix(seed, phase, salt) + unit_id.encode("utf-8")``.
    """
    return experiment_prefix(seed, phase, salt) + unit_id.encode()


def layer_hash_input(layer_seed: str, unit_id: str) -> bytes:
    """Return the exact bytes hashed for a layer slot.

    Parameters
    ----------
    layer_seed : str
        The layer's seed.
    unit_id : str
        The randomization unit id.

    Returns
    -------
    bytes
        ``layer_prefix(layer_seed) + unit_id.encode("utf-8")``.
    """
    return layer_prefix(layer_seed) + unit_id.encode()


def prefix_float(prefix: hashlib._Hash, unit_bytes: bytes) -> float:
    """Return the unit float of ``prefix``'s bytes followed by ``unit_bytes``.

    Parameters
    ----------
    prefix : hashlib._Hash
        A SHA-256 object already fed with a prefix; it is copied, not modified.
    unit_bytes : bytes
        The UTF-8 unit id.

    Returns
    -------
    float
        A float in ``[0, 1)``.
    """
    h = prefix.copy()
    h.update(unit_bytes)
    top: int = _unpack_u64(h.digest())[0]
    return (top >> 11) * _SCALE


def _bytes_float(data: bytes) -> float:
    top: int = _unpack_u64(hashlib.sha256(data).digest())[0]
    return (top >> 11) * _SCALE


def unit_float(seed: str, phase: int, salt: str, unit_id: str) -> float:
    """Map (seed, phase, salt, unit id) to a float in ``[0, 1)`` (hash version 1).

    Parameters
    ----------
    seed : str
        The experiment's randomization seed.
    phase : int
        The experiment phase.
    salt : str
        ``SALT_TRAFFIC`` or ``SALT_VARIANT``.
    unit_id : str
        The randomization unit id (any Unicode string).

    Returns
    -------
    float
        ``(first 8 digest bytes as big-endian uint64 >> 11) / 2**53``.

    Examples
    --------
    >>> 0.0 <= unit_float("a1b2c3d4", 1, SALT_VARIANT, "user-1") < 1.0
    True
    """
    return _bytes_float(experiment_hash_input(seed, phase, salt, unit_id))


def layer_float(layer_seed: str, unit_id: str) -> float:
    """Map (layer seed, unit id) to the unit's slot in ``[0, 1)`` of the layer (hash version 1).

    Parameters
    ----------
    layer_seed : str
        The layer's seed.
    unit_id : str
        The randomization unit id.

    Returns
    -------
    float
        The layer slot; ``[0, holdout_fraction)`` is the layer's holdout.
    """
    return _bytes_float(layer_hash_input(layer_seed, unit_id))


def override_hash(seed: str, phase: int, unit_id: str) -> str:
    """Return how an override's unit id is served: the hex SHA-256 of its variant hash input.

    Parameters
    ----------
    seed : str
        The experiment's randomization seed.
    phase : int
        The experiment phase.
    unit_id : str
        The overridden unit id.

    Returns
    -------
    str
        ``sha256(experiment_hash_input(seed, phase, "variant", unit_id)).hexdigest()``.

    Examples
    --------
    >>> override_hash("a1b2c3d4", 1, "user-1") == hashlib.sha256(
    ...     b"tb1:a1b2c3d4:1:variant:user-1").hexdigest()
    True
    """
    return hashlib.sha256(experiment_hash_input(seed, phase, SALT_VARIANT, unit_id)).hexdigest()


def value_prefix(seed: str) -> bytes:
    """Return the head of a value hash input: ``f"tb1:{seed}:value:"`` (UTF-8).

    Parameters
    ----------
    seed : str
        The experiment's randomization seed (the salt).

    Returns
    -------
    bytes
        The prefix to which ``value_form(value)`` is appended.
    """
    return f"tb1:{seed}:value:".encode()


def value_form(value: str | float | bool) -> bytes:
    """Return the typed byte form of a targeting value (see the module docstring).

    Parameters
    ----------
    value : str, int, float or bool
        A scalar of a targeting condition or of a unit's attributes.

    Returns
    -------
    bytes
        ``b"s:" + UTF-8``, ``b"n:" + 16 hex digits of the binary64`` or ``b"b:true"/b"b:false"``.

    Raises
    ------
    TypeError
        For any other type; ``UnicodeEncodeError`` for a string with a lone surrogate;
        ``OverflowError`` for an int beyond the range of a double.
    """
    if isinstance(value, bool):
        return b"b:true" if value else b"b:false"
    if isinstance(value, str):
        return b"s:" + value.encode()
    if isinstance(value, int | float):
        number = float(value)
        if number == 0.0:
            number = 0.0  # -0 == +0: one form
        return b"n:" + _pack_double(number).hex().encode()
    raise TypeError(f"a targeting value is a string, number or boolean; got {type(value)}")


def value_hash(seed: str, value: str | float | bool) -> str:
    """Return how a targeting value is served: ``hex(sha256(value_prefix(seed) + value_form))``.

    Parameters
    ----------
    seed : str
        The experiment's randomization seed (the salt).
    value : str, int, float or bool
        The value.

    Returns
    -------
    str
        64 lowercase hex digits.

    Examples
    --------
    >>> value_hash("a1b2c3d4", "FR") == hashlib.sha256(b"tb1:a1b2c3d4:value:s:FR").hexdigest()
    True
    >>> value_hash("p0", 3) == value_hash("p0", 3.0) != value_hash("p0", "3")
    True
    """
    return hashlib.sha256(value_prefix(seed) + value_form(value)).hexdigest()
