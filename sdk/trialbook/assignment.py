"""Pure, deterministic assignment of units to variants from an SDK config.

The config is the JSON body of ``GET /v1/sdk/config``::

    {"config_version": 2, "hash_version": 1,
     "layers": {LAYER: {"seed": str, "holdout_fraction": float in [0, 1)}},
     "experiments": {KEY: {"key", "status", "seed", "phase", "randomization_unit",
                           "variants": [{"key", "weight", "is_control"}], "traffic_fraction",
                           "targeting", "override_hashes", "layer", "layer_range"}}}

Config versions
---------------
``config_version`` 2 (what the service serves, :func:`serve_config`) carries no personal data in
clear: no drafts (only experiments that have started: running, paused, stopped, concluded), the
overrides as ``override_hashes: {HEX: variant}`` (:func:`trialbook.hashing.override_hash` of the
unit id) and the ``eq``/``neq``/``in``/``not_in`` values of targeting as hashed leaves (see
:mod:`trialbook.targeting`); an experiment that is not running carries no targeting (it is not
evaluated: such an experiment answers its overrides, else the control with ``not_running``).
Version 1 (the key absent) is the plain form: ``overrides: {unit_id: variant}`` and clear values,
as written in tests and by hand; both forms may be mixed and evaluate identically. Any other
``config_version`` makes every experiment answer ``error``.

Evaluation order (the first rule that applies decides)
-------------------------------------------------------
1. unknown experiment → variant None, ``unknown_experiment``
2. ``overrides[unit_id]`` or ``override_hashes[override_hash(seed, phase, unit_id)]`` → that
   variant, ``in_experiment`` False, ``override`` (even when paused)
3. ``status != "running"`` → control, ``not_running``
4. targeting false → control, ``not_targeted``
5. layer slot ``< holdout_fraction`` → control, ``holdout``
6. layer slot outside ``[lo, hi)`` of ``layer_range`` → control, ``layer_excluded``
7. traffic hash ``>= traffic_fraction`` → control, ``traffic_excluded`` (skipped at 1.0)
8. the variant whose cumulative weight first exceeds the variant hash → ``split``,
   ``in_experiment`` True

Hashes are defined in :mod:`trialbook.hashing`. Only ``split`` has ``in_experiment`` True. With
``override_hashes`` the unit id is hashed once per evaluation: the variant digest looks it up in
the overrides and then picks its variant.

Errors never raise
------------------
An experiment whose config is malformed (see :func:`validate_config`), a config with an
unsupported ``hash_version``, or an unexpected failure at evaluation (a unit id that is neither a
string nor an int, a lone surrogate) gives reason ``error`` with the control variant when the
config names one, else None. Int unit ids are evaluated as ``str(unit_id)``. The client adds
``no_config`` (variant None) when it has no config yet.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from trialbook.hashing import (
    HASH_VERSION,
    SALT_TRAFFIC,
    SALT_VARIANT,
    experiment_prefix,
    layer_prefix,
    override_hash,
    prefix_float,
)
from trialbook.targeting import Predicate, compile_condition, hash_condition, validate_condition

__all__ = [
    "CONFIG_VERSION",
    "SERVED_STATUSES",
    "STATUSES",
    "Assignment",
    "CompiledConfig",
    "Reason",
    "compile_config",
    "evaluate",
    "serve_config",
    "serve_experiment",
    "validate_config",
]

STATUSES: Final = ("draft", "running", "paused", "stopped", "concluded", "archived")
# Experiments that have started: the only ones a served (version 2) config lists.
SERVED_STATUSES: Final = ("running", "paused", "stopped", "concluded")
CONFIG_VERSION: Final = 2
_CONFIG_VERSIONS: Final = (1, 2)
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
_WEIGHT_TOLERANCE: Final = 1e-6
_SCALE: Final = 1.0 / (1 << 53)
_unpack_u64 = struct.Struct(">Q").unpack_from


class Reason(StrEnum):
    """Why a unit got its variant (a ``str``; serializes as its value)."""

    SPLIT = "split"
    OVERRIDE = "override"
    NOT_TARGETED = "not_targeted"
    TRAFFIC_EXCLUDED = "traffic_excluded"
    LAYER_EXCLUDED = "layer_excluded"
    HOLDOUT = "holdout"
    NOT_RUNNING = "not_running"
    UNKNOWN_EXPERIMENT = "unknown_experiment"
    NO_CONFIG = "no_config"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Assignment:
    """The result of assigning one unit to one experiment.

    Attributes
    ----------
    experiment : str
        The experiment key.
    variant : str or None
        The variant key to show; None only for an unknown experiment, no config, or an error
        where the control is unknown.
    in_experiment : bool
        True only for reason ``split``: the unit counts in the analysis (log an exposure).
    reason : Reason
        Why (see the module docstring).
    phase : int or None
        The experiment phase the answer belongs to, None when unknown.
    """

    experiment: str
    variant: str | None
    in_experiment: bool
    reason: Reason
    phase: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the ``POST /v1/assign`` item: ``{experiment, variant, in_experiment, reason}``.

        Returns
        -------
        dict
            JSON-ready mapping (``reason`` as its string value).
        """
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "in_experiment": self.in_experiment,
            "reason": self.reason.value,
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _validate_layer(name: str, layer: object, path: str) -> list[str]:
    if not isinstance(layer, Mapping):
        return [f"{path}: expected an object {{seed, holdout_fraction}}"]
    errors: list[str] = []
    seed = layer.get("seed")
    if not isinstance(seed, str) or not seed or ":" in seed:
        errors.append(f"{path}.seed: expected a non-empty string without ':'")
    holdout = layer.get("holdout_fraction", 0.0)
    if not _is_number(holdout) or not 0.0 <= holdout < 1.0:
        errors.append(f"{path}.holdout_fraction: expected a number in [0, 1); got {holdout!r}")
    return errors


def _is_hex64(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and _HEX_DIGITS.issuperset(text)


def _validate_experiment(key: str, exp: object, layers: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(exp, Mapping):
        return [f"{path}: expected an experiment object"]
    errors: list[str] = []
    if "key" in exp and exp["key"] != key:
        errors.append(f"{path}.key: {exp['key']!r} differs from the map key {key!r}")
    status = exp.get("status")
    if status not in STATUSES:
        errors.append(f"{path}.status: {status!r} is not one of {', '.join(STATUSES)}")
    seed = exp.get("seed")
    if not isinstance(seed, str) or not seed or ":" in seed:
        errors.append(f"{path}.seed: expected a non-empty string without ':'")
    phase = exp.get("phase")
    if not isinstance(phase, int) or isinstance(phase, bool) or phase < 0:
        errors.append(f"{path}.phase: expected an integer >= 0; got {phase!r}")
    variants = exp.get("variants")
    variant_keys: set[str] = set()
    if not isinstance(variants, list) or len(variants) < 2:
        errors.append(f"{path}.variants: expected a list of at least 2 variants")
    else:
        controls = 0
        total = 0.0
        for i, variant in enumerate(variants):
            vpath = f"{path}.variants[{i}]"
            if not isinstance(variant, Mapping):
                errors.append(f"{vpath}: expected an object {{key, weight, is_control}}")
                continue
            vkey = variant.get("key")
            if not isinstance(vkey, str) or not vkey:
                errors.append(f"{vpath}.key: expected a non-empty string")
            elif vkey in variant_keys:
                errors.append(f"{vpath}.key: duplicate variant key {vkey!r}")
            else:
                variant_keys.add(vkey)
            weight: Any = variant.get("weight")
            if not _is_number(weight) or weight <= 0:
                errors.append(f"{vpath}.weight: expected a number > 0; got {weight!r}")
            else:
                total += weight
            if variant.get("is_control", False) is True:
                controls += 1
            elif not isinstance(variant.get("is_control", False), bool):
                errors.append(f"{vpath}.is_control: expected a boolean")
        if controls != 1:
            errors.append(f"{path}.variants: expected exactly one is_control; found {controls}")
        if not errors and abs(total - 1.0) > _WEIGHT_TOLERANCE:
            errors.append(f"{path}.variants: weights sum to {total!r}; they must sum to 1")
    traffic = exp.get("traffic_fraction", 1.0)
    if not _is_number(traffic) or not 0.0 < traffic <= 1.0:
        errors.append(f"{path}.traffic_fraction: expected a number in (0, 1]; got {traffic!r}")
    errors.extend(validate_condition(exp.get("targeting"), f"{path}.targeting"))
    overrides = exp.get("overrides")
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            errors.append(f"{path}.overrides: expected an object {{unit_id: variant}}")
        else:
            for unit, vkey in overrides.items():
                if (
                    not isinstance(unit, str)
                    or not isinstance(vkey, str)
                    or vkey not in variant_keys
                ):
                    errors.append(
                        f"{path}.overrides[{unit!r}]: {vkey!r} is not a variant of {key!r}"
                    )
    hashed = exp.get("override_hashes")
    if hashed is not None:
        if not isinstance(hashed, Mapping):
            errors.append(f"{path}.override_hashes: expected an object {{sha256 hex: variant}}")
        else:
            for digest, vkey in hashed.items():
                if not _is_hex64(digest):
                    errors.append(
                        f"{path}.override_hashes[{digest!r}]: expected 64 lowercase hex digits"
                    )
                elif not isinstance(vkey, str) or vkey not in variant_keys:
                    errors.append(
                        f"{path}.override_hashes[{digest!r}]: {vkey!r} is not a variant of {key!r}"
                    )
    layer = exp.get("layer")
    layer_range = exp.get("layer_range")
    if layer is None:
        if layer_range is not None:
            errors.append(f"{path}.layer_range: must be null when layer is null")
    elif not isinstance(layer, str) or layer not in layers:
        errors.append(f"{path}.layer: {layer!r} is not a key of the config's layers")
    elif (
        not isinstance(layer_range, list | tuple)
        or len(layer_range) != 2
        or not all(_is_number(bound) for bound in layer_range)
        or not 0.0 <= layer_range[0] < layer_range[1] <= 1.0
    ):
        errors.append(f"{path}.layer_range: expected [lo, hi) with 0 <= lo < hi <= 1")
    return errors


def validate_config(config: object) -> list[str]:
    """Check an SDK config and describe every problem.

    Parameters
    ----------
    config : object
        The parsed JSON body of ``GET /v1/sdk/config``.

    Returns
    -------
    list of str
        ``"<path>: <problem>"`` messages (paths like ``$.experiments['k'].variants[0].weight``);
        empty when the config is valid.
    """
    if not isinstance(config, Mapping):
        return ["$: expected an object {hash_version, layers, experiments}"]
    errors: list[str] = []
    version = config.get("hash_version")
    if version != HASH_VERSION:
        errors.append(f"$.hash_version: {version!r} is not supported; this SDK speaks 1")
    config_version = config.get("config_version", 1)
    if config_version not in _CONFIG_VERSIONS or isinstance(config_version, bool):
        errors.append(
            f"$.config_version: {config_version!r} is not supported; this SDK reads 1 and 2"
        )
    layers = config.get("layers") or {}
    if not isinstance(layers, Mapping):
        errors.append("$.layers: expected an object {layer: {seed, holdout_fraction}}")
        layers = {}
    for name, layer in layers.items():
        errors.extend(_validate_layer(name, layer, f"$.layers[{name!r}]"))
    experiments = config.get("experiments")
    if not isinstance(experiments, Mapping):
        errors.append("$.experiments: expected an object {key: experiment}")
        return errors
    for key, exp in experiments.items():
        path = f"$.experiments[{key!r}]"
        try:
            errors.extend(_validate_experiment(key, exp, layers, path))
        except Exception as exc:  # defensive: a validator bug must not break the whole config
            errors.append(f"{path}: cannot be validated ({exc!r})")
    return errors


def _control_of(exp: object) -> str | None:
    try:
        for variant in exp["variants"]:  # type: ignore[index]
            if variant.get("is_control") is True and isinstance(variant.get("key"), str):
                return str(variant["key"])
    except Exception:
        return None
    return None


class _Experiment:
    """Precomputed evaluation state of one experiment (hash prefixes, cumulative weights)."""

    __slots__ = (
        "cum",
        "errors",
        "hi",
        "holdout",
        "key",
        "layer_prefix",
        "lo",
        "override_digests",
        "overrides",
        "predicate",
        "r_error",
        "r_holdout",
        "r_layer_excluded",
        "r_not_running",
        "r_not_targeted",
        "r_traffic_excluded",
        "running",
        "splits",
        "traffic",
        "traffic_prefix",
        "variant_prefix",
    )

    def __init__(self, key: str, exp: Any, layers: Mapping[str, Any], errors: list[str]) -> None:
        self.key = key
        self.errors = errors
        control = _control_of(exp)
        phase = exp.get("phase") if isinstance(exp, Mapping) else None
        phase = phase if isinstance(phase, int) and not isinstance(phase, bool) else None
        self.r_error = Assignment(key, control, False, Reason.ERROR, phase)
        if errors:
            self.running = False
            self.r_not_running = self.r_error
            self.overrides: dict[str, Assignment] = {}
            self.override_digests: dict[bytes, Assignment] = {}
            return
        assert phase is not None
        self.r_not_running = Assignment(key, control, False, Reason.NOT_RUNNING, phase)
        self.r_not_targeted = Assignment(key, control, False, Reason.NOT_TARGETED, phase)
        self.r_holdout = Assignment(key, control, False, Reason.HOLDOUT, phase)
        self.r_layer_excluded = Assignment(key, control, False, Reason.LAYER_EXCLUDED, phase)
        self.r_traffic_excluded = Assignment(key, control, False, Reason.TRAFFIC_EXCLUDED, phase)
        self.running = exp["status"] == "running"
        self.overrides = {
            unit: Assignment(key, vkey, False, Reason.OVERRIDE, phase)
            for unit, vkey in (exp.get("overrides") or {}).items()
        }
        self.override_digests = {
            bytes.fromhex(digest): Assignment(key, vkey, False, Reason.OVERRIDE, phase)
            for digest, vkey in (exp.get("override_hashes") or {}).items()
        }
        targeting = exp.get("targeting")
        self.predicate: Predicate | None = (
            None if targeting is None else compile_condition(targeting, exp["seed"])
        )
        variants = exp["variants"]
        total = math.fsum(v["weight"] for v in variants)
        cum: list[float] = []
        running_total = 0.0
        for variant in variants:
            running_total += variant["weight"]
            cum.append(running_total / total)
        # The last boundary is exactly 1 so every hash in [0, 1) lands on a variant.
        cum[-1] = 1.0
        self.cum = cum
        self.splits = tuple(Assignment(key, v["key"], True, Reason.SPLIT, phase) for v in variants)
        seed = exp["seed"]
        self.variant_prefix = hashlib.sha256(experiment_prefix(seed, phase, SALT_VARIANT))
        self.traffic = float(exp.get("traffic_fraction", 1.0))
        # At 100 % traffic every unit is in: skip the second hash.
        self.traffic_prefix = (
            None
            if self.traffic >= 1.0
            else hashlib.sha256(experiment_prefix(seed, phase, SALT_TRAFFIC))
        )
        layer = exp.get("layer")
        if layer is None:
            self.layer_prefix: hashlib._Hash | None = None
            self.holdout = self.lo = self.hi = 0.0
        else:
            spec = layers[layer]
            self.layer_prefix = hashlib.sha256(layer_prefix(spec["seed"]))
            self.holdout = float(spec.get("holdout_fraction", 0.0))
            self.lo, self.hi = float(exp["layer_range"][0]), float(exp["layer_range"][1])

    def evaluate(self, unit_id: str, attributes: Mapping[str, Any] | None) -> Assignment:
        try:
            if self.overrides:
                forced = self.overrides.get(unit_id)
                if forced is not None:
                    return forced
            digest: bytes | None = None
            if self.override_digests:
                # The variant digest is the override key: the one hash of this evaluation.
                h = self.variant_prefix.copy()
                h.update(unit_id.encode())
                digest = h.digest()
                forced = self.override_digests.get(digest)
                if forced is not None:
                    return forced
            if not self.running:
                return self.r_not_running
            if self.predicate is not None and not self.predicate(attributes):
                return self.r_not_targeted
            unit_bytes = unit_id.encode()
            if self.layer_prefix is not None:
                slot = prefix_float(self.layer_prefix, unit_bytes)
                if slot < self.holdout:
                    return self.r_holdout
                if not self.lo <= slot < self.hi:
                    return self.r_layer_excluded
            if (
                self.traffic_prefix is not None
                and prefix_float(self.traffic_prefix, unit_bytes) >= self.traffic
            ):
                return self.r_traffic_excluded
            if digest is None:
                h = self.variant_prefix.copy()
                h.update(unit_bytes)
                digest = h.digest()
            x = (_unpack_u64(digest)[0] >> 11) * _SCALE
            return self.splits[bisect.bisect_right(self.cum, x)]
        except Exception:
            # Int ids are accepted as their decimal string; anything else is an error.
            if isinstance(unit_id, int) and not isinstance(unit_id, bool):
                return self.evaluate(str(unit_id), attributes)
            return self.r_error


class CompiledConfig:
    """An SDK config prepared for fast evaluation; build it with :func:`compile_config`.

    Attributes
    ----------
    hash_version : object
        The config's ``hash_version``.
    errors : list of str
        Everything :func:`validate_config` found; experiments named there answer ``error``.
    """

    __slots__ = ("_experiments", "errors", "hash_version", "raw")

    def __init__(self, config: object) -> None:
        self.raw = config
        self.errors = validate_config(config)
        self._experiments: dict[str, _Experiment] = {}
        if not isinstance(config, Mapping):
            self.hash_version: object = None
            return
        self.hash_version = config.get("hash_version")
        layers = config.get("layers") or {}
        if not isinstance(layers, Mapping):
            layers = {}
        experiments = config.get("experiments")
        if not isinstance(experiments, Mapping):
            return
        global_errors = [e for e in self.errors if not e.startswith("$.experiments[")]
        for key, exp in experiments.items():
            if not isinstance(key, str):
                continue
            errors = list(global_errors)
            prefix = f"$.experiments[{key!r}]"
            errors.extend(
                e for e in self.errors if e.startswith(prefix + ".") or e.startswith(prefix + ":")
            )
            try:
                self._experiments[key] = _Experiment(key, exp, layers, errors)
            except Exception as exc:  # defensive: validation should have caught it
                self._experiments[key] = _Experiment(key, exp, layers, [f"{prefix}: {exc!r}"])

    def experiment_keys(self) -> list[str]:
        """Return the keys of the experiments in the config.

        Returns
        -------
        list of str
            In config order.
        """
        return list(self._experiments)

    def experiment_errors(self, experiment: str) -> list[str]:
        """Return the validation problems that make ``experiment`` answer ``error``.

        Parameters
        ----------
        experiment : str
            The experiment key.

        Returns
        -------
        list of str
            Empty when the experiment is valid or unknown.
        """
        exp = self._experiments.get(experiment) if isinstance(experiment, str) else None
        return [] if exp is None else list(exp.errors)

    def evaluate(
        self,
        experiment: str,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> Assignment:
        """Assign ``unit_id`` to a variant of ``experiment``; never raises.

        Parameters
        ----------
        experiment : str
            The experiment key.
        unit_id : str
            The randomization unit id (an int is used as its decimal string).
        attributes : Mapping, optional
            Attributes for targeting.

        Returns
        -------
        Assignment
            See the module docstring for the order of the rules and the reasons.
        """
        try:
            exp = self._experiments.get(experiment)
        except Exception:  # an unhashable key
            exp = None
        if exp is None:
            return Assignment(str(experiment), None, False, Reason.UNKNOWN_EXPERIMENT, None)
        return exp.evaluate(unit_id, attributes)


def compile_config(config: object) -> CompiledConfig:
    """Prepare a config for fast evaluation (validate once, precompute hash prefixes).

    Parameters
    ----------
    config : object
        The parsed JSON body of ``GET /v1/sdk/config``; malformed input never raises.

    Returns
    -------
    CompiledConfig
        Call ``.evaluate(experiment, unit_id, attributes)``; ``.errors`` lists the problems.
    """
    return CompiledConfig(config)


def evaluate(
    config: object,
    experiment: str,
    unit_id: str,
    attributes: Mapping[str, Any] | None = None,
) -> Assignment:
    """Assign one unit from a raw config (compiles it on every call: use ``compile_config``
    once and ``CompiledConfig.evaluate`` on a hot path).

    Parameters
    ----------
    config : object
        The parsed JSON body of ``GET /v1/sdk/config``.
    experiment : str
        The experiment key.
    unit_id : str
        The randomization unit id.
    attributes : Mapping, optional
        Attributes for targeting.

    Returns
    -------
    Assignment
        See the module docstring.
    """
    return compile_config(config).evaluate(experiment, unit_id, attributes)


def serve_experiment(exp: Mapping[str, Any]) -> dict[str, Any]:
    """Return a valid experiment of a config in its served form (``config_version`` 2).

    Parameters
    ----------
    exp : Mapping
        One experiment of a config (plain or already served) that :func:`validate_config`
        accepts.

    Returns
    -------
    dict
        The same fields, with ``overrides`` replaced by ``override_hashes`` (both merged), the
        targeting hashed (:func:`trialbook.targeting.hash_condition`) when the experiment is
        running and withheld (``None``) when it is not: it is never evaluated then.
    """
    seed, phase = exp["seed"], exp["phase"]
    served = {k: v for k, v in exp.items() if k != "overrides"}
    hashed = dict(exp.get("override_hashes") or {})
    for unit, vkey in (exp.get("overrides") or {}).items():
        hashed[override_hash(seed, phase, unit)] = vkey
    served["override_hashes"] = hashed
    running = exp["status"] == "running"
    served["targeting"] = hash_condition(exp.get("targeting"), seed) if running else None
    return served


def serve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a valid config as the service serves it (``config_version`` 2).

    Parameters
    ----------
    config : Mapping
        A config that :func:`validate_config` accepts, plain or served.

    Returns
    -------
    dict
        Only the experiments that have started (:data:`SERVED_STATUSES`), each through
        :func:`serve_experiment`; the layers as they are. It evaluates like ``config`` for every
        experiment it lists.
    """
    return {
        "config_version": CONFIG_VERSION,
        "hash_version": config["hash_version"],
        "layers": dict(config.get("layers") or {}),
        "experiments": {
            key: serve_experiment(exp)
            for key, exp in config["experiments"].items()
            if exp["status"] in SERVED_STATUSES
        },
    }
