"""Server-side assignment: the SDK config, its per-process cache and ``POST /v1/assign``.

Nothing here hashes or evaluates targeting: the service builds the same config the SDK downloads
(``GET /v1/sdk/config``) and evaluates it with the SDK's own
:func:`trialbook.assignment.compile_config`, so the server and every SDK agree by construction
(``tests/fixtures/assignment_vectors.json`` pins it).

What the config holds
---------------------
The body of ``GET /v1/sdk/config`` is the served form (``config_version: 2``,
:func:`trialbook.assignment.serve_config`): only experiments that have started (``running``,
``paused``, ``stopped``, ``concluded``; the last three answer the control with ``not_running``),
their overrides as ``override_hashes`` and their ``eq``/``neq``/``in``/``not_in`` targeting values
as SHA-256 hashes, so an SDK key reads neither drafts nor override unit ids (e-mail addresses...)
nor list values. An experiment that is not running carries no targeting (never evaluated then);
its overrides still win. Archived experiments and drafts are left out. Variants and
``traffic_fraction`` are the current phase's. Every layer is listed with its seed and
``holdout_fraction``.

The server itself evaluates the same served experiments plus the drafts (in the same served
form): ``POST /v1/assign`` and the single-flag OFREP evaluation still answer a draft named by
key with the control and ``not_running`` (or its override, so QA can force a variant before the
start), but nothing that lists experiments (``/v1/assign`` without ``experiments``, OFREP bulk)
names a draft. OFREP's protocol (request, reasons, bodies) is :mod:`service.assignment.ofrep`.

Cache
-----
Each process keeps the last built config (canonical JSON body, strong ETag and compiled form) keyed
by a cheap *database version*: experiment count, latest ``updated_at``, sum of phases, layer count
and sum of holdout fractions: one aggregate query per request, no cross-process invalidation
needed. Every lifecycle, protocol, phase and override change bumps ``updated_at``; a snapshot older
than :data:`MAX_SNAPSHOT_AGE_S` is rebuilt anyway, which bounds staleness should a writer's clock
ever run backwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy import text
from sqlmodel import Session, col, select
from trialbook.assignment import (
    CONFIG_VERSION,
    SERVED_STATUSES,
    Assignment,
    CompiledConfig,
    compile_config,
    serve_experiment,
)
from trialbook.dimensions import exposure_attributes
from trialbook.hashing import HASH_VERSION

from service.assignment.models import AssignIn
from service.db import open_session
from service.events.models import ExposureIn
from service.events.service import ingest
from service.experiments.models import Experiment, Layer, Status

log = logging.getLogger("trialbook")

# Statuses of the experiments the server evaluates (everything but archived); the SDK config
# serves those of SERVED_STATUSES (not drafts).
CONFIG_STATUSES: Final = (
    Status.draft.value,
    Status.running.value,
    Status.paused.value,
    Status.stopped.value,
    Status.concluded.value,
)
# Seconds after which a cached config is rebuilt even when the database version did not move.
MAX_SNAPSHOT_AGE_S: Final = 10.0

_VERSION_COLUMNS: Final = (
    "(SELECT count(*) FROM experiment), (SELECT max(updated_at) FROM experiment), "
    "(SELECT sum(phase) FROM experiment), (SELECT count(*) FROM layer), "
    "(SELECT sum(holdout_fraction) FROM layer)"
)
_VERSION_SQL: Final = text("SELECT " + _VERSION_COLUMNS)


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` canonically: sorted keys, no spaces, UTF-8, no NaN.

    Parameters
    ----------
    value : Any
        A JSON-ready value.

    Returns
    -------
    bytes
        The same bytes for equal values; the ETag is computed from them.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def strong_etag(body: bytes) -> str:
    """Return a strong ETag for a response body: the quoted first 128 bits of its SHA-256."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Tell whether an ``If-None-Match`` header matches ``etag``.

    RFC 9110 §13.1.2: ``If-None-Match`` uses the weak comparison (a ``W/`` prefix is ignored), the
    header is a comma-separated list, and ``*`` matches any current representation.

    Parameters
    ----------
    if_none_match : str or None
        The request header.
    etag : str
        The current entity tag, quoted.

    Returns
    -------
    bool
        True when the client already holds this representation (answer 304).
    """
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == bare:
            return True
    return False


# ------------------------------------------------------------------------------------ the config


def _config_experiment(exp: Experiment) -> dict[str, Any]:
    """One experiment in the plain form (clear overrides and targeting), before serving."""
    in_layer = exp.layer is not None and exp.layer_range is not None
    # The attribute names an exposure carries for the results' slices (product.md §12), only
    # when the protocol names some.
    dimensions = {"dimensions": list(exp.dimensions)} if exp.dimensions else {}
    return dimensions | {
        "key": exp.key,
        "status": exp.status,
        "seed": exp.seed,
        "phase": exp.phase,
        "randomization_unit": exp.randomization_unit,
        "variants": [
            {"key": v["key"], "weight": v["weight"], "is_control": bool(v.get("is_control"))}
            for v in exp.variants
        ],
        "traffic_fraction": exp.traffic_fraction,
        "targeting": exp.targeting,
        "overrides": dict(exp.overrides or {}),
        "layer": exp.layer if in_layer else None,
        "layer_range": list(exp.layer_range) if in_layer and exp.layer_range else None,
    }


def build_config(session: Session) -> dict[str, Any]:
    """Build the config the server evaluates from the database: the served form, drafts included.

    Parameters
    ----------
    session : Session
        A database session.

    Returns
    -------
    dict
        ``{config_version: 2, hash_version, layers: {key: {seed, holdout_fraction}},
        experiments: {key: {...}}}``, every experiment through
        :func:`trialbook.assignment.serve_experiment`; :func:`served` of it is the body of
        ``GET /v1/sdk/config`` (see the module docstring).
    """
    layers = session.exec(select(Layer).order_by(col(Layer.key))).all()
    experiments = session.exec(
        select(Experiment)
        .where(col(Experiment.status).in_(CONFIG_STATUSES))
        .order_by(col(Experiment.key))
    ).all()
    return {
        "config_version": CONFIG_VERSION,
        "hash_version": HASH_VERSION,
        "layers": {
            layer.key: {"seed": layer.seed, "holdout_fraction": layer.holdout_fraction}
            for layer in layers
        },
        "experiments": {exp.key: serve_experiment(_config_experiment(exp)) for exp in experiments},
    }


def served(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an evaluated config an SDK may read: the experiments that have started.

    Parameters
    ----------
    config : Mapping
        A config (as :func:`build_config` makes it, or any config a test compiles).

    Returns
    -------
    dict
        The same config without the experiments whose status is not in ``SERVED_STATUSES``.
    """
    experiments = config.get("experiments")
    if not isinstance(experiments, Mapping):
        return dict(config)
    return {
        **config,
        "experiments": {
            key: exp
            for key, exp in experiments.items()
            if not isinstance(exp, Mapping) or exp.get("status") in SERVED_STATUSES
        },
    }


def config_version(session: Session) -> tuple[Any, ...]:
    """Return the cheap database version the config cache is keyed by (one aggregate query).

    Parameters
    ----------
    session : Session
        A database session.

    Returns
    -------
    tuple
        Experiment count, latest ``updated_at``, sum of phases, layer count, sum of holdouts.
    """
    row = session.execute(_VERSION_SQL).one()
    return tuple(row)


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """One built config: the served body and its ETag, the compiled form (drafts included), the
    served experiment keys (what listing endpoints may name) and the version it was built at."""

    version: tuple[Any, ...]
    config: dict[str, Any]
    body: bytes
    etag: str
    compiled: CompiledConfig
    built_at: float
    listed: tuple[str, ...] = ()


def snapshot_of(config: dict[str, Any], version: tuple[Any, ...] = ()) -> ConfigSnapshot:
    """Wrap a config into a :class:`ConfigSnapshot` (canonical body, ETag, compiled config).

    Parameters
    ----------
    config : dict
        The config the server evaluates (:func:`build_config`); the body is :func:`served` of it.
    version : tuple, optional
        The database version it was built at.

    Returns
    -------
    ConfigSnapshot
        Ready to serve and to evaluate.
    """
    public = served(config)
    body = canonical_json(public)
    compiled = compile_config(config)
    if compiled.errors:
        # The service validates every protocol, so this is a bug; units still get answers.
        log.error("the SDK config built from the database is invalid: %s", compiled.errors[:5])
    experiments = public.get("experiments")
    keys = set(experiments) if isinstance(experiments, Mapping) else set()
    return ConfigSnapshot(
        version=version,
        config=public,
        body=body,
        etag=strong_etag(body),
        compiled=compiled,
        built_at=time.monotonic(),
        listed=tuple(k for k in compiled.experiment_keys() if k in keys),
    )


class ConfigCache:
    """The per-process config cache, re-validated against the database version on every call.

    Parameters
    ----------
    max_age : float
        Seconds after which a snapshot is rebuilt even if the version did not change.
    """

    def __init__(self, max_age: float = MAX_SNAPSHOT_AGE_S) -> None:
        self.max_age = max_age
        self.builds = 0
        self._snapshot: ConfigSnapshot | None = None
        self._lock = threading.Lock()

    def _fresh(self, snap: ConfigSnapshot | None, version: tuple[Any, ...]) -> bool:
        return (
            snap is not None
            and snap.version == version
            and time.monotonic() - snap.built_at < self.max_age
        )

    def current(
        self, version: tuple[Any, ...], load: Callable[[], dict[str, Any]]
    ) -> ConfigSnapshot:
        """Return the snapshot for ``version``, calling ``load`` to rebuild it when needed.

        Parameters
        ----------
        version : tuple
            The database version just read (:func:`config_version`).
        load : callable
            Builds the config (:func:`build_config` on a session) when the cache is stale.

        Returns
        -------
        ConfigSnapshot
            The config as of ``version`` (or newer: a change landing between the version read
            and the rebuild only costs one more rebuild on the next call).
        """
        snap = self._snapshot
        if snap is not None and self._fresh(snap, version):
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and self._fresh(snap, version):
                return snap
            snap = snapshot_of(load(), version)
            self._snapshot = snap
            self.builds += 1
            return snap

    def get(self, session: Session) -> ConfigSnapshot:
        """Return the current config, reading the version and rebuilding through ``session``.

        Parameters
        ----------
        session : Session
            A database session (read-only use).

        Returns
        -------
        ConfigSnapshot
            The snapshot for the database as of this call.
        """
        return self.current(config_version(session), lambda: build_config(session))


def load_config() -> dict[str, Any]:
    """Build the config in a session of its own (see :func:`build_config`).

    Returns
    -------
    dict
        The SDK config.
    """
    with open_session() as session:
        return build_config(session)


# Read with the API key in one statement on the SDK hot path (service.auth.KeyCache).
CONFIG_VERSION_COLUMNS: Final = _VERSION_COLUMNS


# ------------------------------------------------------------------------------- POST /v1/assign


def assign(
    compiled: CompiledConfig, body: AssignIn, listed: Iterable[str] | None = None
) -> list[Assignment]:
    """Assign ``body.unit_id`` to the requested experiments (the listed ones when omitted).

    Parameters
    ----------
    compiled : CompiledConfig
        The current config (from :class:`ConfigCache`), or any SDK config compiled by the SDK.
    body : AssignIn
        The request.
    listed : iterable of str, optional
        The keys answered when ``experiments`` is omitted (``ConfigSnapshot.listed``: never a
        draft); default every experiment of ``compiled``.

    Returns
    -------
    list of Assignment
        One per requested key, in request order (config order when ``experiments`` is omitted).
    """
    if body.experiments is not None:
        keys: Iterable[str] = body.experiments
    else:
        keys = compiled.experiment_keys() if listed is None else listed
    return [compiled.evaluate(key, body.unit_id, body.attributes) for key in keys]


def render_assignments(assignments: Sequence[Assignment]) -> bytes:
    """Serialize ``{assignments: [...]}`` (product.md §4) as JSON bytes.

    Parameters
    ----------
    assignments : sequence of Assignment
        What :func:`assign` returned.

    Returns
    -------
    bytes
        The response body.
    """
    return json.dumps(
        {"assignments": [a.to_dict() for a in assignments]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


# A fixed namespace: exposure ids are UUIDv5 of (experiment, phase, unit, variant), so assigning the
# same unit again produces the same event id and the events domain stores it once.
EXPOSURE_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://trialbook.dev/exposure")


def exposure_event_id(experiment: str, phase: int, unit_id: str, variant: str) -> str:
    """Return the deterministic event id of a server-logged exposure.

    Parameters
    ----------
    experiment : str
        Experiment key.
    phase : int
        The phase the assignment belongs to.
    unit_id : str
        The unit.
    variant : str
        The variant assigned.

    Returns
    -------
    str
        A UUIDv5 (``json.dumps`` of the fields, so no separator can be forged by a unit id).
    """
    name = json.dumps([experiment, phase, unit_id, variant], ensure_ascii=False)
    return str(uuid.uuid5(EXPOSURE_NAMESPACE, name))


def exposures_for(
    assignments: Sequence[Assignment],
    unit_id: str,
    now: datetime,
    attributes: Mapping[str, Any] | None = None,
    config: object = None,
) -> list[dict[str, Any]]:
    """Exposure events (``ExposureIn`` fields) for the assignments that count in an analysis.

    Parameters
    ----------
    assignments : sequence of Assignment
        The answers given.
    unit_id : str
        The unit.
    now : datetime
        The exposure timestamp (aware UTC).

    Returns
    -------
    list of dict
        Only for ``in_experiment`` answers (reason ``split``); overrides are never analysed.
        With ``attributes`` and the SDK ``config``, each carries the experiment's dimensions.
    """
    out: list[dict[str, Any]] = []
    for a in assignments:
        if not a.in_experiment or a.variant is None or a.phase is None:
            continue
        out.append(
            {
                "event_id": exposure_event_id(a.experiment, a.phase, unit_id, a.variant),
                "type": "exposure",
                "experiment": a.experiment,
                "variant": a.variant,
                "unit_id": unit_id,
                "timestamp": now,
                "phase": a.phase,
                "attributes": exposure_attributes(config, a.experiment, attributes),
            }
        )
    return out


def log_exposures(
    assignments: Sequence[Assignment],
    unit_id: str,
    now: datetime,
    attributes: Mapping[str, Any] | None = None,
    config: object = None,
) -> int:
    """Write the exposures of the analysed assignments through the events domain.

    The event ids are deterministic (:func:`exposure_event_id`), so a unit assigned again is stored
    once: the events domain keeps the first exposure and counts the repeat as a duplicate (or, as
    its timestamp differs, a conflict; the stored first exposure is kept either way).

    Parameters
    ----------
    assignments : sequence of Assignment
        The answers given to the unit.
    unit_id : str
        The unit.
    now : datetime
        The exposure timestamp (aware UTC).

    Returns
    -------
    int
        How many exposures were newly stored.
    """
    events = []
    for exposure in exposures_for(assignments, unit_id, now, attributes, config):
        try:
            events.append(ExposureIn.model_validate(exposure))
        except ValidationError as exc:  # e.g. a control character in the unit id (§5)
            log.warning("exposure of %r not stored: %s", unit_id, exc.errors(include_url=False))
    if not events:
        return 0
    with open_session(write=True) as session:
        result = ingest(session, events)
    for rejected in result.rejected:
        log.warning("exposure of %s not stored: %s", unit_id, rejected)
    return result.accepted
