"""The looks of a group sequential design (``analysis.method: group_sequential``), as they happen.

Lan–DeMets spending needs the information fractions of every earlier look, not a schedule fixed
in advance. Every analysis of the current phase (``GET …/results``, the report, the scheduled
check) is a look: it is recorded in ``analysis_look`` when its information fraction ``t`` (units
in the smallest arm / ``sample_size_per_variant``) is at least :data:`MIN_LOOK_STEP` past the last
recorded look. An analysis closer than that to the last recorded look is read as a provisional
look appended to the recorded ones and is not recorded: with O'Brien–Fleming spending it spends
almost nothing, and the history stays at most ``1 / MIN_LOOK_STEP`` looks up to the horizon. Once
a look at ``t ≥ 1`` is recorded (the final analysis, which spends what is left of α), later
analyses are read against it (no α is left; warning ``group_sequential_past_horizon``).

Recording happens in its own short write transaction, so that the read of the results stays a
read; two analyses recording the same look at once collide on the unique key and the look is
recorded once (the loser reads its own fraction as the current look).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlalchemy.exc import IntegrityError
from sqlmodel import Column, Field, Session, SQLModel, col, select

from service.db import UTCDateTime, open_session, utcnow

__all__ = ["MIN_LOOK_STEP", "AnalysisLook", "look_fractions", "recorded_looks"]

# Smallest advance of the information fraction over the last recorded look that records a new one.
MIN_LOOK_STEP = 0.01


class AnalysisLook(SQLModel, table=True):
    """One recorded look of a group sequential design at one phase."""

    __tablename__ = "analysis_look"
    __table_args__ = (UniqueConstraint("experiment_id", "phase", "look", name="uq_analysis_look"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", ondelete="CASCADE")
    phase: int
    look: int
    units: int  # units in the smallest arm at the look
    information_fraction: float
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False)
    )


def recorded_looks(session: Session, experiment_id: int, phase: int) -> list[AnalysisLook]:
    """The recorded looks of a phase, in order."""
    rows = session.exec(
        select(AnalysisLook)
        .where(AnalysisLook.experiment_id == experiment_id, AnalysisLook.phase == phase)
        .order_by(col(AnalysisLook.look))
    ).all()
    return list(rows)


def _record(experiment_id: int, phase: int, look: int, units: int, fraction: float) -> None:
    with open_session(write=True) as write:
        try:
            write.add(
                AnalysisLook(
                    experiment_id=experiment_id,
                    phase=phase,
                    look=look,
                    units=units,
                    information_fraction=fraction,
                )
            )
            write.commit()
        except IntegrityError:  # another analysis recorded this look first
            write.rollback()


def look_fractions(
    session: Session,
    experiment_id: int,
    phase: int,
    *,
    units: int,
    planned: int,
    record: bool,
) -> list[float]:
    """Information fractions of every look so far, the current analysis last.

    Parameters
    ----------
    session : Session
        The (read) session of the analysis.
    experiment_id, phase : int
        The experiment and its current phase.
    units : int
        Units in the smallest arm now.
    planned : int
        ``sample_size_per_variant`` (> 0): the horizon.
    record : bool
        Record the current analysis as a look when it qualifies (see the module docstring).

    Returns
    -------
    list of float
        Strictly increasing fractions (capped at 1 by the engine); empty when no unit has been
        analysed yet (no look).
    """
    current = units / planned
    looks = recorded_looks(session, experiment_id, phase)
    fractions = [row.information_fraction for row in looks]
    if units <= 0:
        return fractions
    last = fractions[-1] if fractions else 0.0
    if last >= 1.0:  # the final analysis is recorded: later reads use its bound
        return fractions
    if fractions and current <= last:  # no new information since the last recorded look
        return fractions
    if record and (not fractions or current - last >= MIN_LOOK_STEP or current >= 1.0):
        _record(experiment_id, phase, len(fractions) + 1, units, current)
    return [*fractions, current]
