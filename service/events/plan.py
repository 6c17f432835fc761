"""Plan a request's rows: resolve its exposures against their experiments, settle repeats
inside the request, make the rows to insert (step 3 of :mod:`service.events.service`).

A plan is made in the request's thread from the experiments as the writer last read them
(:data:`targets_seen`); the writer checks that they still read the same and otherwise makes it
again in its transaction (:func:`service.events.writer.store_jobs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.db import open_session, utcnow
from service.events.models import IngestResult, RejectedEvent
from service.events.prepare import Item, attribute_text
from service.events.store import Store, Target
from service.events.tuning import TARGETS_FRESH_SECONDS
from service.experiments.models import Status

__all__ = [
    "Job",
    "Plan",
    "experiment_keys",
    "make_plan",
    "merge_units",
    "plan_job",
    "targets_seen",
    "unit_rows",
]

NOT_STARTED = frozenset({Status.draft.value, Status.archived.value})
ENDED = frozenset({Status.stopped.value, Status.concluded.value})

# (experiment id, phase, late) for an accepted exposure, else (code, reason).
Resolution = tuple[int, int, bool] | tuple[str, str]


def resolve(
    target: Target | None, experiment: str, phase_sent: int | None, variant: str
) -> Resolution:
    """Check an exposure against its experiment: ids and lateness, or a rejection."""
    if target is None:
        return "unknown_experiment", f"no experiment with key '{experiment}'"
    if target.status in NOT_STARTED:
        return "not_started", f"experiment '{experiment}' is '{target.status}': it has not started"
    phase = phase_sent if phase_sent is not None else target.phase
    variants = target.variants.get(phase)
    if variants is None:
        return (
            "unknown_phase",
            f"experiment '{experiment}' has no phase {phase} (phases 1 to {target.phase})",
        )
    if variant not in variants:
        return (
            "unknown_variant",
            f"'{variant}' is not a variant of experiment '{experiment}' in phase {phase}; "
            f"use one of {sorted(variants)}",
        )
    late = target.status in ENDED or phase in target.ended or phase < target.phase
    return target.id, phase, late


def kept_attributes(attributes: Mapping[str, Any] | None, dimensions: Sequence[str]) -> Any:
    """JSON text of the experiment's dimensions among the attributes, or None."""
    if not attributes or not dimensions:
        return None
    kept = {d: attribute_text(attributes[d]) for d in dimensions if attributes.get(d) is not None}
    return json.dumps(kept, sort_keys=True) if kept else None


def merge_units(units: Iterable[tuple[Any, ...]], flag: Any) -> list[tuple[Any, ...]]:
    """One ``exposure_unit`` row per (experiment, phase, unit) of ``units`` (rows of that table).

    The earliest exposure gives the variant and ``first_ts`` (stored timestamps are fixed-width
    UTC text, so they compare as time); ``multiple`` when the unit saw several variants.
    """
    merged: dict[tuple[int, int, str], tuple[Any, ...]] = {}
    for row in units:
        key = (row[0], row[1], row[2])
        current = merged.get(key)
        if current is None:  # the common case: the unit's only exposure
            merged[key] = row
            continue
        multiple = flag(bool(current[5]) or bool(row[5]) or current[3] != row[3])
        if row[4] < current[4]:
            merged[key] = (*row[:5], multiple, row[6])
        else:
            merged[key] = (*current[:5], multiple, current[6])
    return list(merged.values())


def unit_rows(
    new_exposures: Iterable[tuple[Any, ...]], flag: Any, attributes: Mapping[str, str]
) -> list[tuple[Any, ...]]:
    """One ``exposure_unit`` row per (experiment, phase, unit) of the inserted exposure rows
    (``attributes``: the kept attributes' JSON text by event id)."""
    no = flag(False)
    get = attributes.get
    return merge_units(((r[1], r[2], r[4], r[3], r[5], no, get(r[0])) for r in new_exposures), flag)


@dataclass(eq=False)
class Plan:
    """A request's rows, made from its prepared events and a reading of its experiments.

    Made in the request's thread, before the write lock (:func:`make_plan`); the writer only checks
    that the experiments still read the same (``targets``) and otherwise makes it again.
    """

    targets: dict[str, Target | None]
    exposures: list[tuple[Any, ...]]
    conversions: list[tuple[Any, ...]]
    units: list[tuple[Any, ...]]
    rejected: list[RejectedEvent]
    duplicates: int  # repeats inside the request
    conflicts: int
    late: int  # late exposures among ``exposures``
    # SQLite: the rows' values in one list each, ready to bind; event ids of each table.
    flat: tuple[list[Any], list[Any], list[Any]] | None
    ids: tuple[frozenset[str], frozenset[str]]
    # The kept attributes (JSON text) of exposures that carry dimensions, by event id.
    attributes: dict[str, str] = field(default_factory=dict)


def make_plan(items: Sequence[Item], targets: Mapping[str, Target | None], *, sqlite: bool) -> Plan:
    """Resolve a request's exposures, settle its inner repeats, and make its rows.

    A repeat inside the request is compared with the request's first valid occurrence of the
    id (in either table): same payload hash, a duplicate; else a conflict.
    """
    flag: Any = int if sqlite else bool
    received = utcnow().isoformat(" ", "microseconds")[:26] + ("" if sqlite else "+00")
    resolutions: dict[tuple[str, Any, str], Resolution] = {}
    exposures: list[tuple[Any, ...]] = []
    conversions: list[tuple[Any, ...]] = []
    rejected: list[RejectedEvent] = []
    seen: dict[str, str] = {}  # event_id -> digest of its first valid occurrence
    duplicates = conflicts = late_count = 0
    attributes: dict[str, str] = {}
    # Unpacked in the loop (faster than attribute reads): ``a`` is Item.key (experiment or
    # name), ``b`` Item.value (variant or value).
    for index, is_exposure, event_id, digest, ts, unit, a, b, phase_sent, attrs in items:
        if is_exposure:
            key = (a, phase_sent, b)
            resolution = resolutions.get(key)
            if resolution is None:
                resolution = resolutions[key] = resolve(targets.get(a), a, phase_sent, b)
            if len(resolution) == 2:
                code, reason = resolution
                rejected.append(RejectedEvent(index=index, error=str(reason), code=str(code)))
                continue
        first = seen.get(event_id)
        if first is not None:
            if first == digest:
                duplicates += 1
            else:
                conflicts += 1
            continue
        seen[event_id] = digest
        if is_exposure:
            exp_id, phase, late = resolution  # type: ignore[misc]  # accepted: the 3-tuple
            exposures.append((event_id, exp_id, phase, b, unit, ts, received, digest, flag(late)))
            late_count += late
            if attrs:
                target = targets.get(a)
                kept = kept_attributes(attrs, target.dimensions if target else ())
                if kept is not None:
                    attributes[event_id] = kept
        else:
            conversions.append((event_id, a, unit, b, ts, received, digest))
    units = unit_rows(exposures, flag, attributes)
    flat = None
    if sqlite:
        flat = (
            [v for row in exposures for v in row],
            [v for row in conversions for v in row],
            [v for row in units for v in row],
        )
    return Plan(
        targets=dict(targets),
        exposures=exposures,
        conversions=conversions,
        units=units,
        rejected=rejected,
        duplicates=duplicates,
        conflicts=conflicts,
        late=late_count,
        flat=flat,
        ids=(frozenset(r[0] for r in exposures), frozenset(r[0] for r in conversions)),
        attributes=attributes,
    )


def experiment_keys(items: Iterable[Item]) -> set[str]:
    return {item.key for item in items if item.exposure}


@dataclass(eq=False)
class Job:
    """One request's prepared events, its rows (``plan``), and its verdicts once stored."""

    items: list[Item]
    rejected: list[RejectedEvent]
    plan: Plan | None = None
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    committed: bool = False
    error: BaseException | None = None

    def result(self) -> IngestResult:
        self.rejected.sort(key=lambda r: r.index)
        return IngestResult(
            accepted=self.accepted,
            duplicates=self.duplicates,
            conflicts=self.conflicts,
            rejected=self.rejected,
            late=self.late,
        )


class TargetsSeen:
    """The experiments as the writer last read them, for the request threads' plans.

    A plan made from a reading that is out of date costs only its remaking: the writer reads the
    experiments again in its transaction and compares (:func:`service.events.writer.store_jobs`).
    So a request thread whose experiments were all read less than ``TARGETS_FRESH_SECONDS`` ago
    plans without a query of its own (:mod:`service.events.tuning`).
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Target | None]] = {}

    def get(self, keys: Collection[str]) -> dict[str, Target | None] | None:
        now = time.monotonic()
        out: dict[str, Target | None] = {}
        for key in keys:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] > TARGETS_FRESH_SECONDS:
                return None
            out[key] = seen[1]
        return out

    def put(self, keys: Collection[str], targets: Mapping[str, Target]) -> None:
        now = time.monotonic()
        if len(self._seen) > 10_000:  # keys of bad requests must not pile up
            self._seen = {}
        for key in keys:
            self._seen[key] = (now, targets.get(key))


targets_seen = TargetsSeen()


def plan_job(job: Job, *, sqlite: bool) -> None:
    """Make the job's rows in the calling thread, from a recent reading of its experiments."""
    keys = experiment_keys(job.items)
    targets = targets_seen.get(keys)
    if targets is None:
        with open_session(write=False) as session:
            read = Store(session).targets(keys)
        targets_seen.put(keys, read)
        targets = {k: read.get(k) for k in keys}
    job.plan = make_plan(job.items, targets, sqlite=sqlite)
