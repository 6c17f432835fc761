"""HTTP route for experiment results."""

from fastapi import APIRouter

from service.analysis import service
from service.analysis.models import ResultsPublic
from service.deps import ReaderDep, SessionDep
from service.errors import responses

router = APIRouter(prefix="/v1/experiments", tags=["results"], responses=responses(401, 403))


@router.get("/{key}/results", response_model=ResultsPublic, responses=responses(404))
def get_results(key: str, session: SessionDep, _: ReaderDep) -> ResultsPublic:
    """Results of the current phase: SRM, every protocol metric, power and the recommendation."""
    # A sync route runs in the threadpool, on a read (deferred) transaction: a long analysis
    # never blocks the event loop or takes a write lock.
    return service.compute_results(session, key)
