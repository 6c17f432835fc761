"""HTTP routes for the metrics catalogue."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from service.deps import EditorDep, Offset, ReaderDep, SessionDep
from service.errors import responses
from service.metrics import service
from service.metrics.models import MetricCreate, MetricList, MetricPublic, MetricUpdate

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=responses(401, 403))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MetricPublic,
    responses=responses(409, 422),
)
def create_metric(body: MetricCreate, session: SessionDep, _: EditorDep) -> MetricPublic:
    """Define a metric in the catalogue."""
    return service.create_metric(session, body)


@router.get("", response_model=MetricList, responses=responses(422))
def list_metrics(
    session: SessionDep,
    _: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> MetricList:
    """List metrics."""
    return service.list_metrics(session, limit=limit, offset=offset)


@router.get("/{key}", response_model=MetricPublic, responses=responses(404))
def get_metric(key: str, session: SessionDep, _: ReaderDep) -> MetricPublic:
    """Get one metric."""
    return service.to_public(service.get_metric_row(session, key))


@router.patch("/{key}", response_model=MetricPublic, responses=responses(404, 409, 422))
def update_metric(key: str, body: MetricUpdate, session: SessionDep, _: EditorDep) -> MetricPublic:
    """Update a metric (its definition only while no live experiment uses it)."""
    return service.update_metric(session, key, body)
