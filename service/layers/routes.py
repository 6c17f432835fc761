"""HTTP routes for layers (mutual exclusion and holdouts)."""

from fastapi import APIRouter, status

from service.deps import EditorDep, ReaderDep, SessionDep
from service.errors import responses
from service.experiments.models import LayerCreate, LayerList, LayerPublic, LayerUpdate
from service.layers import service

layers_router = APIRouter(prefix="/v1/layers", tags=["layers"], responses=responses(401, 403))


@layers_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=LayerPublic,
    responses=responses(409, 422),
)
def create_layer(body: LayerCreate, session: SessionDep, _: EditorDep) -> LayerPublic:
    """Create a mutual-exclusion layer, optionally with a holdout."""
    return service.create_layer(session, body)


@layers_router.get("", response_model=LayerList)
def list_layers(session: SessionDep, _: ReaderDep) -> LayerList:
    """List layers with their experiments' slices."""
    return LayerList(items=service.list_layers(session))


@layers_router.get("/{key}", response_model=LayerPublic, responses=responses(404))
def get_layer(key: str, session: SessionDep, _: ReaderDep) -> LayerPublic:
    """Get one layer."""
    return service.layer_public(session, service.get_layer_row(session, key))


@layers_router.patch("/{key}", response_model=LayerPublic, responses=responses(404, 409, 422))
def update_layer(key: str, body: LayerUpdate, session: SessionDep, _: EditorDep) -> LayerPublic:
    """Change a layer's description, or its holdout while no experiment has used it."""
    return service.update_layer(session, key, body)
