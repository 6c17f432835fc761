"""HTTP routes for protocol templates and experiment approval."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from service.auth import Principal, Role
from service.deps import AdminDep, EditorDep, SessionDep, require
from service.errors import responses
from service.experiments.models import KEY_PATTERN, ExperimentPublic
from service.templates import service
from service.templates.models import (
    ApproveIn,
    TemplateCreate,
    TemplateList,
    TemplatePublic,
    TemplateUpdate,
)

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=responses(401, 403))
approval_router = APIRouter(
    prefix="/v1/experiments", tags=["experiments"], responses=responses(401, 403)
)

# Every role reads templates (SDK keys included: the standard is no secret).
AnyRoleDep = Annotated[Principal, Depends(require(Role.editor, Role.viewer, Role.sdk))]
TemplateKey = Annotated[str, Path(pattern=KEY_PATTERN)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TemplatePublic,
    responses=responses(409, 422),
)
def create_template(body: TemplateCreate, session: SessionDep, who: AdminDep) -> TemplatePublic:
    """Create a protocol template (version 1); admin only (product ops owns the standard)."""
    return service.create_template(session, body, who)


@router.get("", response_model=TemplateList)
def list_templates(session: SessionDep, _: AnyRoleDep) -> TemplateList:
    """List templates at their latest version."""
    return TemplateList(items=service.list_templates(session))


@router.get("/{key}", response_model=TemplatePublic, responses=responses(404, 422))
def get_template(
    key: TemplateKey,
    session: SessionDep,
    _: AnyRoleDep,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> TemplatePublic:
    """Get a template: its latest version, or `?version=N`."""
    return service.get_template(session, key, version)


@router.get("/{key}/versions", response_model=TemplateList, responses=responses(404, 422))
def list_versions(key: TemplateKey, session: SessionDep, _: AnyRoleDep) -> TemplateList:
    """Every version of a template, oldest first."""
    return TemplateList(items=service.list_versions(session, key))


@router.put("/{key}", response_model=TemplatePublic, responses=responses(404, 422))
def update_template(
    key: TemplateKey, body: TemplateUpdate, session: SessionDep, who: AdminDep
) -> TemplatePublic:
    """Write a new version of a template (admin only); experiments keep the version they used."""
    return service.update_template(session, key, body, who)


@approval_router.post(
    "/{key}/approve", response_model=ExperimentPublic, responses=responses(404, 409, 422)
)
def approve_experiment(
    key: str, session: SessionDep, who: EditorDep, body: ApproveIn | None = None
) -> ExperimentPublic:
    """Approve a draft for start, or a new phase for resume (by someone else than its authors)."""
    return service.approve(session, key, who, body.note if body else None)
