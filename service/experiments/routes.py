"""HTTP routes for experiments, their lifecycle, phases, audit trail, and layers."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.db import open_session
from service.deps import EditorDep, Offset, ReaderDep, SessionDep
from service.errors import responses
from service.experiments import lifecycle, service, validation
from service.experiments.models import (
    AuditList,
    ConcludeIn,
    ExperimentCreate,
    ExperimentList,
    ExperimentPublic,
    ExperimentUpdate,
    NoteIn,
    PhaseCreate,
    Status,
    TransitionIn,
)


def _cross_field_problems(action: str, request: Request, body: Any) -> list[dict[str, Any]]:
    with open_session() as session:
        errors = validation.body_problems(session, action, request.path_params, body)
    return [
        {"loc": ("body", e.field), "msg": e.message, "type": e.type or "cross_field"}
        for e in errors
    ]


class ProtocolRoute(APIRoute):
    """A route whose 422 holds every problem of a protocol: when the body breaks field rules,
    the cross-field and referential rules run on it too, and join the same 422.

    (FastAPI stops at the field rules; without this, a body with an unknown metric and a bad
    `mde` would name only the `mde`.)
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        action = {
            "create_experiment": "create",
            "update_experiment": "update",
            "create_phase": "phase",
            "conclude_experiment": "conclude",
        }.get(self.name)
        if action is None:
            return original

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except RequestValidationError as exc:
                raw = list(exc.errors())
                if any(e.get("type") == "json_invalid" for e in raw):
                    raise
                more = await run_in_threadpool(_cross_field_problems, action, request, exc.body)
                if not more:
                    raise
                raise RequestValidationError([*raw, *more], body=exc.body) from None

        return handler


router = APIRouter(
    prefix="/v1/experiments",
    tags=["experiments"],
    responses=responses(401, 403),
    route_class=ProtocolRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentPublic,
    responses=responses(409, 422),
)
def create_experiment(
    body: ExperimentCreate, session: SessionDep, who: EditorDep
) -> ExperimentPublic:
    """Register an experiment (its pre-registered protocol); it starts in `draft`."""
    return service.create_experiment(session, body, who)


@router.get("", response_model=ExperimentList, responses=responses(422))
def list_experiments(
    session: SessionDep,
    _: ReaderDep,
    status: Status | None = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> ExperimentList:
    """List experiments, newest first, filtered by status and owner."""
    return service.list_experiments(session, status=status, owner=owner, limit=limit, offset=offset)


@router.get("/{key}", response_model=ExperimentPublic, responses=responses(404))
def get_experiment(key: str, session: SessionDep, _: ReaderDep) -> ExperimentPublic:
    """Get one experiment with its protocol, phases and decision."""
    return service.to_public(session, service.get_row(session, key))


@router.patch("/{key}", response_model=ExperimentPublic, responses=responses(404, 409, 422))
def update_experiment(
    key: str, body: ExperimentUpdate, session: SessionDep, who: EditorDep
) -> ExperimentPublic:
    """Change the protocol in draft; later only title, owner, tags, overrides and the ramp."""
    return service.update_experiment(session, key, body, who)


@router.get("/{key}/audit", response_model=AuditList, responses=responses(404))
def get_audit(key: str, session: SessionDep, _: ReaderDep) -> AuditList:
    """The audit trail: who changed what, when, from which status to which."""
    return AuditList(items=service.list_audit(session, key))


def _transition_route(action: str, summary: str) -> None:
    def handler(
        key: str, session: SessionDep, who: EditorDep, body: TransitionIn | None = None
    ) -> ExperimentPublic:
        return lifecycle.transition(session, key, action, who, note=body.note if body else None)

    handler.__doc__ = summary
    handler.__name__ = f"{action}_experiment"
    router.post(
        f"/{{key}}/{action}",
        response_model=ExperimentPublic,
        responses=responses(404, 409, 422),
        summary=summary,
    )(handler)


_transition_route("start", "Start a draft experiment: it begins assigning units.")
_transition_route("pause", "Pause a running experiment: units get the control.")
_transition_route("resume", "Resume a paused experiment.")
_transition_route("stop", "Stop a running or paused experiment.")
_transition_route("archive", "Archive a draft experiment that will not run.")


@router.post("/{key}/conclude", response_model=ExperimentPublic, responses=responses(404, 409, 422))
def conclude_experiment(
    key: str,
    body: ConcludeIn,
    session: SessionDep,
    who: EditorDep,
) -> ExperimentPublic:
    """Record the decision (ship a variant, roll back, or inconclusive) of a stopped experiment.

    The body is `{decision, variant, rationale}`: `decision` is `ship`, `roll_back` or
    `inconclusive`; `variant` names the variant shipped (required for `ship`, refused
    otherwise); `rationale` says why, and goes into the audit trail.
    """
    return lifecycle.transition(session, key, "conclude", who, conclusion=body)


@router.post(
    "/{key}/phases",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentPublic,
    responses=responses(404, 409, 422),
)
def create_phase(
    key: str, body: PhaseCreate, session: SessionDep, who: EditorDep
) -> ExperimentPublic:
    """Start a new phase with new variants or weights (a new randomization)."""
    return lifecycle.new_phase(session, key, body, who)


@router.post("/{key}/notes", response_model=ExperimentPublic, responses=responses(404, 422))
def add_note(key: str, body: NoteIn, session: SessionDep, who: EditorDep) -> ExperimentPublic:
    """Add a note to an experiment (allowed in every status)."""
    return lifecycle.add_note(session, key, body.text, who)
