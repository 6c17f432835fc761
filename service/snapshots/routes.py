"""HTTP routes for experiment results: the latest snapshot, older snapshots, the series over
time, and refreshes (``product.md`` §6, §12)."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response

from service.assignment.service import etag_matches
from service.auth import READER, Principal, authenticate, fetch_key
from service.db import open_session
from service.deps import MAX_ROW_ID, BearerFor, EditorDep, Offset, ReaderDep, SessionDep
from service.errors import responses
from service.experiments.service import get_row
from service.snapshots import service as snapshots
from service.snapshots.models import (
    RefreshAccepted,
    SnapshotList,
    SnapshotResultsPublic,
    TimeseriesPublic,
)

router = APIRouter(prefix="/v1/experiments", tags=["results"], responses=responses(401, 403))

SnapshotId = Annotated[
    int | None,
    Query(ge=1, le=MAX_ROW_ID, description="read this snapshot instead of the latest"),
]


IfNoneMatch = Annotated[str | None, Header(description="an ETag received before")]
_ETAG_HEADER = {"ETag": {"description": "strong entity tag", "schema": {"type": "string"}}}


def _key(token: str) -> Principal | None:
    return fetch_key(token)[0]


@router.get(
    "/{key}/results",
    response_model=SnapshotResultsPublic,
    responses={
        200: {"description": "The results", "headers": _ETAG_HEADER},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        **responses(404, 409, 422),
    },
)
def get_results(
    key: str,
    request: Request,
    _: Annotated[object, Depends(BearerFor(READER))],
    snapshot: SnapshotId = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Results of the current phase from the latest snapshot (computed now if there is none)."""
    # A sync route runs in the threadpool: a first analysis never blocks the event loop, and it
    # reads in its own transaction (service.snapshots). The body is the snapshot's stored
    # response (the model's JSON, serialized by the refresh): nothing to validate or serialize.
    # The caller's key is read in one statement and the latest body comes from the read path's
    # memo when the experiment is unchanged (service.snapshots.served_latest): a dashboard
    # polling while events are ingested costs the server a few raw statements, not a session's
    # worth of ORM queries (bench/ingest.py --pollers).
    READER.check(authenticate(request, _key))
    served = snapshots.served_latest(key) if snapshot is None else None
    if served is not None:
        snapshot_id, status, body = served
    else:
        with open_session() as session:
            if snapshot is not None:
                snapshot_id, body, status = snapshots.snapshot_response(session, key, snapshot)
            else:
                # read first: the memo keeps a body only beside the definition it was for
                definition = snapshots.read_definition(snapshots.session_dbapi(session), key)
                exp = get_row(session, key)
                status = exp.status
                snapshot_id, body = snapshots.latest_response(session, exp)
                snapshots.remember_served(key, definition, snapshot_id, body)
    headers = {"ETag": snapshots.etag(snapshot_id, status)}
    if etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


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
