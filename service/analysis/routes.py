"""HTTP routes for experiment results: the latest snapshot, older snapshots, the series over
time, and refreshes (``product.md`` §6, §12)."""

from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, FastAPI, Query

from service.config import get_settings
from service.deps import MAX_ROW_ID, EditorDep, Offset, ReaderDep, SessionDep
from service.errors import responses
from service.experiments.service import get_row
from service.periodic import running
from service.snapshots import service as snapshots
from service.snapshots.models import (
    RefreshAccepted,
    SnapshotList,
    SnapshotResultsPublic,
    TimeseriesPublic,
)


def lifespan(app: FastAPI) -> AbstractAsyncContextManager[None]:
    """Refresh running experiments' results unless TRIALBOOK_REFRESH_INTERVAL_SECONDS is 0."""
    interval = get_settings().refresh_interval_seconds
    return running(snapshots.refresh_scheduler(interval) if interval > 0 else None)


router = APIRouter(
    prefix="/v1/experiments", tags=["results"], responses=responses(401, 403), lifespan=lifespan
)

SnapshotId = Annotated[
    int | None,
    Query(ge=1, le=MAX_ROW_ID, description="read this snapshot instead of the latest"),
]


@router.get(
    "/{key}/results", response_model=SnapshotResultsPublic, responses=responses(404, 409, 422)
)
def get_results(
    key: str, session: SessionDep, _: ReaderDep, snapshot: SnapshotId = None
) -> SnapshotResultsPublic:
    """Results of the current phase from the latest snapshot (computed now if there is none)."""
    # A sync route runs in the threadpool: a first analysis never blocks the event loop, and it
    # reads in its own transaction (service.snapshots).
    if snapshot is not None:
        return snapshots.read_snapshot(session, key, snapshot)
    return snapshots.latest_results(session, get_row(session, key))


@router.get("/{key}/results/snapshots", response_model=SnapshotList, responses=responses(404, 422))
def list_snapshots(
    key: str,
    session: SessionDep,
    _: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> SnapshotList:
    """The experiment's results snapshots, newest first."""
    return snapshots.list_snapshots(session, key, limit, offset)


@router.get(
    "/{key}/results/timeseries", response_model=TimeseriesPublic, responses=responses(404, 409)
)
def get_timeseries(key: str, session: SessionDep, _: ReaderDep) -> TimeseriesPublic:
    """Results over time: one point per day of the phase, as they stood at the day's end."""
    return snapshots.timeseries(session, key)


@router.post(
    "/{key}/results/refresh",
    status_code=202,
    response_model=RefreshAccepted,
    responses=responses(404),
)
def refresh_results(
    key: str, session: SessionDep, _: EditorDep, tasks: BackgroundTasks
) -> RefreshAccepted:
    """Recompute the results now (one refresh per experiment at a time); 202 with its snapshot."""
    # The request's write transaction would hold SQLite's write lock that the claim needs.
    session.commit()
    session.close()
    accepted, token = snapshots.request_refresh(key, "manual")
    if token is not None:
        tasks.add_task(snapshots.run_refresh, accepted.snapshot_id, token)
    return accepted
