"""HTTP routes for API keys (admin only)."""

from fastapi import APIRouter, status

from service.deps import AdminDep, RowId, SessionDep
from service.errors import responses
from service.keys import service
from service.keys.models import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyPublic

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=responses(401, 403))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=responses(422)
)
def create_key(body: ApiKeyCreate, session: SessionDep, _: AdminDep) -> ApiKeyCreated:
    """Create an API key; the secret is returned once."""
    return service.create_key(session, name=body.name, role=body.role)


@router.get("", response_model=ApiKeyList)
def list_keys(session: SessionDep, _: AdminDep) -> ApiKeyList:
    """List API keys (never their secrets)."""
    return ApiKeyList(items=service.list_keys(session))


@router.delete("/{key_id}", response_model=ApiKeyPublic, responses=responses(404, 409, 422))
def revoke_key(key_id: RowId, session: SessionDep, who: AdminDep) -> ApiKeyPublic:
    """Revoke an API key (not the one making the request)."""
    return service.revoke_key(session, key_id, caller_key_id=who.key_id)
