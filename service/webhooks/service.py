"""Webhook rules: subscriptions, the outbox, Standard Webhooks signatures, background delivery.

Events are written to the ``webhook_delivery`` outbox inside the transaction that caused them
(a lifecycle transition, a new alert), so a rolled-back request sends nothing. After the commit a
background :class:`DeliveryWorker` thread is woken; it claims due rows with a conditional UPDATE
(several service processes may run workers: a row is sent by the one whose UPDATE matched),
POSTs them, and records the outcome. A failed attempt (network error or non-2xx answer) is retried
on :data:`RETRY_SCHEDULE_SECONDS` with ±20 % jitter (``Retry-After`` is honoured when longer);
after the last one the delivery is ``failed``. API requests never wait for a receiver.

Signatures follow the Standard Webhooks specification (https://www.standardwebhooks.com/):
``webhook-signature: v1,<base64 HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import threading
import uuid
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, delete, event, func, update
from sqlmodel import Session, col, select

from service.auth import Principal
from service.db import open_session, utcnow
from service.errors import NotFoundError, ValidationFailedError
from service.experiments.models import Experiment
from service.webhooks import addresses
from service.webhooks.models import (
    DeliveryList,
    DeliveryOut,
    DeliveryStatus,
    EventType,
    WebhookCreate,
    WebhookCreated,
    WebhookDelivery,
    WebhookPublic,
    WebhookSubscription,
    WebhookUpdate,
)

log = logging.getLogger("trialbook.webhooks")

SECRET_PREFIX = "whsec_"
# Waits after attempt 1, 2, ... (seconds): the Standard Webhooks reference schedule (Svix):
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h; then the delivery is marked failed (7 attempts in all).
RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
# While a worker holds a claimed delivery other workers leave it alone; after this it is retried
# (the worker died mid-attempt).
LEASE_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_RETRY_AFTER_SECONDS = 3600.0
USER_AGENT = "Trialbook-Webhooks/1"

TRANSITION_EVENTS = {
    "start": EventType.experiment_started,
    "pause": EventType.experiment_paused,
    "resume": EventType.experiment_resumed,
    "stop": EventType.experiment_stopped,
    "conclude": EventType.experiment_concluded,
}

# ------------------------------------------------------------------------------------ signing


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header value for one attempt.

    Parameters
    ----------
    secret : str
        ``whsec_`` + base64 key; the HMAC key is the base64-decoded part.
    message_id : str
        The ``webhook-id`` (the same on every retry).
    timestamp : int
        The ``webhook-timestamp``, integer seconds since the Unix epoch.
    body : str
        The exact request body.

    Returns
    -------
    str
        ``"v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>"``.
    """
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# ------------------------------------------------------------------------------ subscriptions


def _public(row: WebhookSubscription) -> WebhookPublic:
    return WebhookPublic.model_validate(row, from_attributes=True)


def get_subscription(session: Session, webhook_id: int) -> WebhookSubscription:
    row = session.get(WebhookSubscription, webhook_id)
    if row is None:
        raise NotFoundError(f"No webhook subscription {webhook_id}.")
    return row


def check_url(url: str) -> None:
    """Refuse (422 naming ``url``) a URL whose host is not, or does not resolve to, public
    addresses (see :mod:`service.webhooks.addresses`)."""
    try:
        addresses.resolve(url)
    except (addresses.RefusedAddressError, addresses.UnresolvedError) as exc:
        raise ValidationFailedError.on(
            "url",
            f"{exc}; webhooks go to public addresses only (TRIALBOOK_WEBHOOK_ALLOW_PRIVATE "
            "allows private ones)",
        ) from exc
    except httpx.InvalidURL as exc:
        raise ValidationFailedError.on("url", f"not a valid URL: {exc}") from exc


def create_subscription(session: Session, body: WebhookCreate, who: Principal) -> WebhookCreated:
    check_url(body.url)
    row = WebhookSubscription(
        url=body.url,
        event_types=sorted({e.value for e in body.event_types}),
        secret=generate_secret(),
        description=body.description,
        active=body.active,
        created_by=who.actor,
    )
    session.add(row)
    session.commit()
    return WebhookCreated(**_public(row).model_dump(), secret=row.secret)


def list_subscriptions(session: Session) -> list[WebhookPublic]:
    rows = session.exec(select(WebhookSubscription).order_by(col(WebhookSubscription.id))).all()
    return [_public(r) for r in rows]


def update_subscription(session: Session, webhook_id: int, body: WebhookUpdate) -> WebhookPublic:
    row = get_subscription(session, webhook_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        check_url(changes["url"])
    for name in ("url", "active"):
        if changes.get(name) is not None:
            setattr(row, name, changes[name])
    if "description" in changes:
        row.description = changes["description"]
    if body.event_types is not None:
        row.event_types = sorted({e.value for e in body.event_types})
    session.add(row)
    session.commit()
    return _public(row)


def delete_subscription(session: Session, webhook_id: int) -> None:
    row = get_subscription(session, webhook_id)
    session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == webhook_id)
    )
    session.delete(row)
    session.commit()


def list_deliveries(
    session: Session,
    webhook_id: int,
    *,
    status: DeliveryStatus | None,
    limit: int,
    offset: int,
) -> DeliveryList:
    get_subscription(session, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
    count = (
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == webhook_id)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status.value)
        count = count.where(WebhookDelivery.status == status.value)
    rows = session.exec(
        query.order_by(col(WebhookDelivery.id).desc()).limit(limit).offset(offset)
    ).all()
    items = [DeliveryOut.model_validate(r, from_attributes=True) for r in rows]
    for item in items:
        if item.status is not DeliveryStatus.pending:
            item.next_attempt_at = None
    return DeliveryList(items=items, total=session.exec(count).one(), limit=limit, offset=offset)


# ------------------------------------------------------------------------------------- outbox

_WAKE_FLAG = "trialbook_webhooks_enqueued"


def enqueue(session: Session, event_type: EventType, data: dict[str, Any]) -> int:
    """Write one delivery per active subscription to ``event_type``; sent after commit.

    Returns the number of deliveries queued. The caller commits.
    """
    subs = [
        s
        for s in session.exec(
            select(WebhookSubscription).where(col(WebhookSubscription.active).is_(True))
        ).all()
        if event_type.value in s.event_types
    ]
    if not subs:
        return 0
    now = utcnow()
    message_id = f"msg_{uuid.uuid4().hex}"
    body = json.dumps(
        {"type": event_type.value, "timestamp": now.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )
    for sub in subs:
        assert sub.id is not None
        session.add(
            WebhookDelivery(
                subscription_id=sub.id,
                message_id=message_id,
                event_type=event_type.value,
                body=body,
                next_attempt_at=now,
            )
        )
    session.info[_WAKE_FLAG] = True
    return len(subs)


def experiment_data(exp: Experiment) -> dict[str, Any]:
    return {
        "experiment": exp.key,
        "title": exp.title,
        "owner": exp.owner,
        "status": exp.status,
        "phase": exp.phase,
    }


def on_transition(session: Session, exp: Experiment, action: str, old: str, new: str) -> None:
    """A transition listener (:mod:`service.wiring`): the lifecycle webhooks, in the outbox."""
    event_type = TRANSITION_EVENTS.get(action)
    if event_type is None:
        return
    data = experiment_data(exp) | {"action": action, "from": old, "to": new}
    if action == "conclude" and exp.decision is not None:
        data["decision"] = {k: exp.decision.get(k) for k in ("decision", "variant", "rationale")}
    enqueue(session, event_type, data)


# ------------------------------------------------------------------------------------ delivery


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(raw) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


REFUSED = "refused: "


def _attempt(
    client: httpx.Client, sub: WebhookSubscription, delivery: WebhookDelivery
) -> tuple[int | None, str | None, float | None]:
    """POST once: (status or None, error or None, Retry-After seconds or None).

    The host is checked again (it may resolve elsewhere now) and the request goes to the address
    checked; a non-public one is not contacted, and the error starts with :data:`REFUSED`.
    """
    try:
        target = addresses.resolve(sub.url)
    except addresses.RefusedAddressError as exc:
        return None, f"{REFUSED}{exc}"[:2000], None
    except (addresses.UnresolvedError, httpx.InvalidURL) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000], None
    url, pinned_headers, extensions = addresses.request_for(target)
    timestamp = int(utcnow().timestamp())
    headers = pinned_headers | {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(sub.secret, delivery.message_id, timestamp, delivery.body),
    }
    try:
        response = client.post(
            url, content=delivery.body.encode(), headers=headers, extensions=extensions
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000], None
    if 200 <= response.status_code < 300:
        return response.status_code, None, None
    return response.status_code, f"HTTP {response.status_code}", _retry_after(response)


def http_client() -> httpx.Client:
    """The deliveries' client: no redirects (a receiver could point them anywhere), and no
    keep-alive (connections go to checked addresses; one to a shared address must not carry
    another host's TLS session)."""
    return httpx.Client(
        timeout=REQUEST_TIMEOUT_SECONDS,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _claim(delivery: WebhookDelivery, now: datetime) -> bool:
    with open_session(write=True) as session:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.id) == delivery.id,
                col(WebhookDelivery.status) == DeliveryStatus.pending.value,
                col(WebhookDelivery.attempts) == delivery.attempts,
                col(WebhookDelivery.next_attempt_at) <= now,
            )
            .values(
                attempts=delivery.attempts + 1,
                last_attempt_at=now,
                next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
            )
        )
        session.commit()
        return bool(cast("CursorResult[Any]", result).rowcount == 1)


def _record(
    delivery_id: int,
    attempts: int,
    status: int | None,
    error: str | None,
    retry_after: float | None,
) -> None:
    with open_session(write=True) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:  # the subscription was deleted meanwhile
            return
        now = utcnow()
        row.response_status = status
        row.last_error = error
        if error is None:
            row.status = DeliveryStatus.succeeded.value
            row.delivered_at = now
        elif attempts > len(RETRY_SCHEDULE_SECONDS) or error.startswith(REFUSED):
            # A refused address is not retried: whoever controls the name chose it.
            row.status = DeliveryStatus.failed.value
        else:
            wait = RETRY_SCHEDULE_SECONDS[attempts - 1] * random.uniform(0.8, 1.2)
            if retry_after is not None:
                wait = max(wait, min(retry_after, MAX_RETRY_AFTER_SECONDS))
            row.next_attempt_at = now + timedelta(seconds=wait)
        session.add(row)
        session.commit()


def deliver_due(limit: int = 50, client: httpx.Client | None = None) -> int:
    """Attempt every delivery that is due now (at most ``limit``); return how many were tried."""
    now = utcnow()
    with open_session() as session:
        due = session.exec(
            select(WebhookDelivery, WebhookSubscription)
            .join(
                WebhookSubscription,
                col(WebhookSubscription.id) == col(WebhookDelivery.subscription_id),
            )
            .where(
                col(WebhookDelivery.status) == DeliveryStatus.pending.value,
                col(WebhookDelivery.next_attempt_at) <= now,
            )
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
            .limit(limit)
        ).all()
    if not due:
        return 0
    own = client is None
    http = client or http_client()
    tried = 0
    try:
        for delivery, sub in due:
            if not _claim(delivery, now):
                continue  # another worker took it
            assert delivery.id is not None
            if not sub.active:
                _record(delivery.id, delivery.attempts + 1, None, "subscription inactive", None)
                continue
            status, error, retry_after = _attempt(http, sub, delivery)
            _record(delivery.id, delivery.attempts + 1, status, error, retry_after)
            tried += 1
    finally:
        if own:
            http.close()
    return tried


class DeliveryWorker:
    """A daemon thread that delivers the outbox: woken after commits that queued messages,
    and polling every ``poll_seconds`` for retries that came due."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()
        _workers.add(self)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        _workers.discard(self)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with http_client() as client:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    tried = deliver_due(client=client)
                except Exception:  # keep the worker alive; the row stays pending
                    log.exception("webhook delivery pass failed")
                    tried = 0
                if tried == 0:
                    self._wake.wait(self.poll_seconds)


_workers: set[DeliveryWorker] = set()


def _wake_workers(session: Session) -> None:
    if session.info.pop(_WAKE_FLAG, False):
        for worker in list(_workers):
            worker.wake()


def _forget_wake(session: Session) -> None:
    session.info.pop(_WAKE_FLAG, None)


def wake_workers_after_commit() -> None:
    """Wake the delivery workers after every commit that queued messages (SQLAlchemy events on
    every Session, attached once, by :mod:`service.wiring`)."""
    if not event.contains(Session, "after_commit", _wake_workers):
        event.listen(Session, "after_commit", _wake_workers)
        event.listen(Session, "after_rollback", _forget_wake)
