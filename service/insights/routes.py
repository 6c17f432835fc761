"""HTTP route for portfolio insights."""

from fastapi import APIRouter

from service.deps import ReaderDep, SessionDep
from service.errors import responses
from service.insights import service
from service.insights.models import InsightsPublic

router = APIRouter(prefix="/v1/insights", tags=["insights"], responses=responses(401, 403))


@router.get("", response_model=InsightsPublic)
def get_insights(session: SessionDep, _: ReaderDep) -> InsightsPublic:
    """Portfolio insights: status counts, outcomes, win rate, durations, SRM share."""
    return service.compute_insights(session)
