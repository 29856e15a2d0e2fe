"""Enqueue events in the transaction of the decision they report (a transactional outbox).

:func:`on_audit`, the audit sink that :func:`subscribe_to_audit` registers with
:mod:`idp_service.platform.audit` when a process is composed (the app factory, the
``devicetrust`` CLI), calls :func:`enqueue` for the ``ok`` audit actions of
:mod:`~idp_service.webhooks.catalog`: one ``webhook_deliveries`` row per
matching active endpoint joins the caller's session, so the event is committed
with the decision or rolled back with it. The cost is one indexed query for
the active endpoints (and nothing more when there are none); decisions that
are not events cost a dictionary lookup.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import utcnow
from idp_service.webhooks import catalog
from idp_service.webhooks.tables import WebhookDelivery, WebhookEndpoint

_ACTIVE = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
    WebhookEndpoint.active.is_(True)
)


def timestamp(at: dt.datetime) -> str:
    """An event's ``timestamp``: RFC 3339 UTC with microseconds."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_payload(event_type: str, data: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """The JSON body of an event (Standard Webhooks shape: type, timestamp, data; plus id)."""
    return {"id": str(uuid.uuid4()), "type": event_type, "timestamp": timestamp(at), "data": data}


def wants(event_types: list[str] | None, event_type: str) -> bool:
    """True if an endpoint with this filter receives ``event_type`` (None: everything)."""
    return event_types is None or event_type in event_types


def add_delivery(
    session: Session, endpoint_id: int, payload: dict[str, Any], at: dt.datetime
) -> WebhookDelivery:
    """Queue ``payload`` for one endpoint, due at once."""
    row = WebhookDelivery(
        endpoint_id=endpoint_id,
        event_id=payload["id"],
        event_type=payload["type"],
        payload=payload,
        status="pending",
        attempts=0,
        next_attempt_at=at,
        created_at=at,
    )
    session.add(row)
    return row


def enqueue(
    session: Session, events: list[tuple[str, dict[str, Any]]], at: dt.datetime | None = None
) -> int:
    """Add a delivery per event and matching active endpoint to ``session``; return how many."""
    if not events:
        return 0
    with session.no_autoflush:
        endpoints = session.execute(_ACTIVE).all()
    if not endpoints:
        return 0
    at = at or utcnow()
    added = 0
    for event_type, data in events:
        payload = make_payload(event_type, data, at)
        for endpoint_id, event_types in endpoints:
            if wants(event_types, event_type):
                add_delivery(session, endpoint_id, payload, at)
                added += 1
    return added


def on_audit(session: Session, event: audit.Recorded) -> None:
    """The audit sink: an ``ok`` event whose action is a webhook event enqueues its
    deliveries in the decision's session (a dictionary lookup for every other event)."""
    if event.outcome != "ok" or event.action not in catalog.EVENT_TYPES:
        return
    found = catalog.events_for(
        event.action,
        actor=event.actor,
        user_id=event.user_id,
        device_id=event.device_id,
        details=event.details,
    )
    enqueue(session, found, event.at)


def subscribe_to_audit() -> None:
    """Enqueue webhook events for this process's audited decisions (idempotent); every
    composition root that writes audit events calls this once."""
    audit.subscribe(on_audit)
