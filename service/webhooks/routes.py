"""HTTP routes for webhook subscriptions and their delivery log (admin only)."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.deps import AdminDep, Offset, RowId, SessionDep
from service.errors import responses
from service.webhooks import service
from service.webhooks.models import (
    DeliveryList,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookPublic,
    WebhookUpdate,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=responses(401, 403))


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated, responses=responses(422)
)
def create_webhook(body: WebhookCreate, session: SessionDep, who: AdminDep) -> WebhookCreated:
    """Subscribe a URL to event types; the signing secret is returned once."""
    return service.create_subscription(session, body, who)


@router.get("", response_model=WebhookList)
def list_webhooks(session: SessionDep, _: AdminDep) -> WebhookList:
    """List webhook subscriptions."""
    return WebhookList(items=service.list_subscriptions(session))


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=responses(404, 422))
def get_webhook(webhook_id: RowId, session: SessionDep, _: AdminDep) -> WebhookPublic:
    """Get one webhook subscription."""
    return WebhookPublic.model_validate(
        service.get_subscription(session, webhook_id), from_attributes=True
    )


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses=responses(404, 422))
def update_webhook(
    webhook_id: RowId, body: WebhookUpdate, session: SessionDep, _: AdminDep
) -> WebhookPublic:
    """Change a subscription's URL, event types, description or active flag."""
    return service.update_subscription(session, webhook_id, body)


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404, 422)
)
def delete_webhook(webhook_id: RowId, session: SessionDep, _: AdminDep) -> Response:
    """Delete a subscription and its delivery log."""
    service.delete_subscription(session, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, responses=responses(404, 422))
def list_deliveries(
    webhook_id: RowId,
    session: SessionDep,
    _: AdminDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> DeliveryList:
    """The delivery log of a subscription, newest first."""
    return service.list_deliveries(session, webhook_id, status=status, limit=limit, offset=offset)
