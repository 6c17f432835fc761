"""HTTP routes for health alerts."""

from typing import Annotated

from fastapi import APIRouter, Query

from service.alerts import service
from service.alerts.models import AlertList, AlertPublic, AlertType, CheckReport
from service.deps import AdminDep, EditorDep, Offset, ReaderDep, RowId, SessionDep
from service.errors import responses

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=responses(401, 403))


@router.get("", response_model=AlertList, responses=responses(422))
def list_alerts(
    session: SessionDep,
    _: ReaderDep,
    experiment: Annotated[str | None, Query(max_length=80)] = None,
    type: AlertType | None = None,
    open: Annotated[bool | None, Query(description="true: unresolved; false: resolved")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> AlertList:
    """List health alerts, newest first."""
    return service.page_alerts(
        session, experiment_key=experiment, type_=type, open_=open, limit=limit, offset=offset
    )


@router.post("/check", response_model=CheckReport)
def run_checks(session: SessionDep, _: AdminDep) -> CheckReport:
    """Re-analyse every running experiment now and raise new alerts."""
    # The request's own write transaction would hold SQLite's write lock that the checks need.
    session.commit()
    session.close()
    return service.run_checks()


@router.post("/{alert_id}/resolve", response_model=AlertPublic, responses=responses(404, 409, 422))
def resolve_alert(alert_id: RowId, session: SessionDep, who: EditorDep) -> AlertPublic:
    """Mark an alert as handled (it is not raised again for the same condition)."""
    return service.resolve_alert(session, alert_id, who)
