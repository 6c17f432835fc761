"""HTTP routes of the data sources (``product.md`` §13); admin only."""

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.deps import AdminDep, SessionDep
from service.errors import responses
from service.warehouse import service
from service.warehouse.models import (
    KEY_PATTERN,
    DataSourceCreate,
    DataSourceList,
    DataSourcePublic,
    DataSourceTest,
    DataSourceUpdate,
)

router = APIRouter(prefix="/v1/data-sources", tags=["data sources"], responses=responses(401, 403))
SourceKey = Annotated[str, Path(pattern=KEY_PATTERN)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DataSourcePublic,
    responses=responses(409, 422),
)
def create_data_source(
    body: DataSourceCreate, session: SessionDep, _: AdminDep
) -> DataSourcePublic:
    """Register a data source: engine, connection (secrets write-only) and column mapping."""
    return service.create_source(session, body)


@router.get("", response_model=DataSourceList)
def list_data_sources(session: SessionDep, _: AdminDep) -> DataSourceList:
    """List the data sources, the built-in store first (secrets never returned)."""
    return DataSourceList(items=service.list_sources(session))


@router.get("/{key}", response_model=DataSourcePublic, responses=responses(404, 422))
def get_data_source(key: SourceKey, session: SessionDep, _: AdminDep) -> DataSourcePublic:
    """Get one data source (secrets never returned: `connection.secrets` names those set)."""
    return service.get_source(session, key)


@router.patch("/{key}", response_model=DataSourcePublic, responses=responses(404, 409, 422))
def update_data_source(
    key: SourceKey, body: DataSourceUpdate, session: SessionDep, _: AdminDep
) -> DataSourcePublic:
    """Change a data source's connection, mapping, timeout or description."""
    return service.update_source(session, key, body)


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404, 409, 422))
def delete_data_source(key: SourceKey, session: SessionDep, _: AdminDep) -> Response:
    """Delete a data source no experiment names."""
    service.delete_source(session, key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{key}/test",
    response_model=DataSourceTest,
    responses=responses(404, 409, 422, 502, 503, 504),
)
def test_data_source(key: SourceKey, session: SessionDep, _: AdminDep) -> DataSourceTest:
    """Check the connection and the column mapping (reads the columns of both sides, no row)."""
    return service.test_source(session, key)
