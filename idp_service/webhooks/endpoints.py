"""Webhook endpoints and their delivery log: add, change, remove, rotate, test, redeliver.

The API, the console and the CLI all call these functions with the caller's
session; each audits what it did (never the secret) and raises
:class:`~idp_service.platform.errors.ServiceError` with a stable code on bad input, so
nothing is written but the caller's audit event. A secret is returned only by
:func:`create` and :func:`rotate`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Invalid, NotFound
from idp_service.platform.models import utcnow
from idp_service.webhooks import catalog, outbox
from idp_service.webhooks.tables import DELIVERY_STATUSES, WebhookDelivery, WebhookEndpoint
from trust_protocol.webhook_signature import new_secret

MAX_URL = 2048
MAX_DESCRIPTION = 256
PAGE = 50


def check_url(url: object) -> str:
    """``url`` if it is an absolute http(s) URL a webhook can be sent to; else 400 ``bad_url``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise Invalid("bad_url", f"url must be an http or https URL of at most {MAX_URL} chars")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise Invalid("bad_url", "url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise Invalid("bad_url", "url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise Invalid("bad_url", "only http and https URLs can receive webhooks")
    if not host:
        raise Invalid("bad_url", "url needs a host, e.g. https://hooks.example.com/devicetrust")
    if parts.username is not None or parts.password is not None:
        raise Invalid("bad_url", "url must not carry credentials; the signature authenticates")
    if parts.fragment:
        raise Invalid("bad_url", "url must not have a #fragment")
    if port == 0:
        raise Invalid("bad_url", "url has port 0")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid("bad_url", "url has an invalid IPv6 host") from None
    return url


def check_event_types(value: object) -> list[str] | None:
    """An endpoint's event-type filter, sorted; else 400 ``bad_event_types``.

    None means every event type. An empty list is refused: it would receive nothing.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > len(catalog.ALL_TYPES):
        raise Invalid(
            "bad_event_types", "event_types is null (every type) or a non-empty list of types"
        )
    unknown = [v for v in value if v not in catalog.ALL_TYPES]
    if unknown:
        raise Invalid(
            "bad_event_types", f"unknown event type; use some of {', '.join(catalog.ALL_TYPES)}"
        )
    return sorted(set(value))


def check_description(value: object) -> str:
    """A description of at most 256 characters; else 400 ``bad_description``."""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise Invalid("bad_description", f"description is at most {MAX_DESCRIPTION} characters")
    if "\x00" in value:
        raise Invalid("bad_description", "description must not contain NUL characters")
    return value


def endpoint_json(row: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API, CLI and console show it (never its secret)."""
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "event_types": row.event_types,
        "active": row.active,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "updated_at": row.updated_at.isoformat(),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    """A delivery log entry."""
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "payload": row.payload,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == "pending" else None,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "last_attempt_at": _iso(row.last_attempt_at),
        "created_at": row.created_at.isoformat(),
        "delivered_at": _iso(row.delivered_at),
    }


def get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """The endpoint, or 404 ``webhook_not_found``."""
    row = session.get(WebhookEndpoint, endpoint_id)
    if row is None:
        raise NotFound("webhook_not_found", f"no webhook endpoint {endpoint_id}")
    return row


def _audit(session: Session, action: str, actor: str, row: WebhookEndpoint, **extra: Any) -> None:
    audit.record(
        session,
        action,
        "ok",
        actor=actor,
        details={"endpoint_id": row.id, "url": row.url, **extra},
    )


def create(
    session: Session,
    url: object,
    *,
    actor: str,
    description: object = "",
    event_types: object = None,
    active: bool = True,
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint; return it and its new secret (the only time the secret is shown)."""
    row = WebhookEndpoint(
        url=check_url(url),
        description=check_description(description),
        event_types=check_event_types(event_types),
        secret=new_secret(),
        active=bool(active),
        created_by=actor,
    )
    session.add(row)
    session.flush()
    _audit(
        session,
        "webhook.create",
        actor,
        row,
        event_types=row.event_types,
        active=row.active,
    )
    return row, row.secret


def update(
    session: Session, endpoint_id: int, changes: dict[str, Any], *, actor: str
) -> WebhookEndpoint:
    """Change an endpoint's url, description, event types or active flag."""
    row = get(session, endpoint_id)
    changed: dict[str, Any] = {}
    if "url" in changes:
        row.url = check_url(changes["url"])
        changed["url"] = row.url
    if "description" in changes:
        row.description = check_description(changes["description"])
        changed["description"] = row.description
    if "event_types" in changes:
        row.event_types = check_event_types(changes["event_types"])
        changed["event_types"] = row.event_types
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise Invalid("bad_active", "active is true or false")
        row.active = changes["active"]
        changed["active"] = row.active
    row.updated_at = utcnow()
    session.flush()
    _audit(session, "webhook.update", actor, row, changed=changed)
    return row


def remove(session: Session, endpoint_id: int, *, actor: str) -> dict[str, Any]:
    """Delete an endpoint and its delivery log."""
    row = get(session, endpoint_id)
    data = endpoint_json(row)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    session.delete(row)
    audit.record(
        session,
        "webhook.delete",
        "ok",
        actor=actor,
        details={"endpoint_id": endpoint_id, "url": data["url"]},
    )
    return data


def rotate(session: Session, endpoint_id: int, *, actor: str) -> tuple[WebhookEndpoint, str]:
    """Give an endpoint a new secret at once; return it (shown this once)."""
    row = get(session, endpoint_id)
    row.secret = new_secret()
    row.updated_at = utcnow()
    _audit(session, "webhook.rotate", actor, row)
    return row, row.secret


def send_test(session: Session, endpoint_id: int, *, actor: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event for this endpoint only (409 if it is disabled)."""
    row = get(session, endpoint_id)
    if not row.active:
        raise Conflict("webhook_disabled", "enable the endpoint before sending it a test")
    now = utcnow()
    payload = outbox.make_payload(catalog.TEST_EVENT, {"endpoint_id": row.id, "actor": actor}, now)
    delivery = outbox.add_delivery(session, row.id, payload, now)
    session.flush()
    _audit(session, "webhook.test", actor, row, event_id=payload["id"])
    return delivery


def redeliver(session: Session, delivery_id: int, *, actor: str) -> WebhookDelivery:
    """Queue the same event (same id and body) again for the same endpoint, as a new delivery."""
    old = session.get(WebhookDelivery, delivery_id)
    if old is None:
        raise NotFound("delivery_not_found", f"no delivery {delivery_id}")
    endpoint = get(session, old.endpoint_id)
    if not endpoint.active:
        raise Conflict("webhook_disabled", "enable the endpoint before redelivering to it")
    now = utcnow()
    row = outbox.add_delivery(session, endpoint.id, old.payload, now)
    session.flush()
    audit.record(
        session,
        "webhook.redeliver",
        "ok",
        actor=actor,
        details={
            "endpoint_id": endpoint.id,
            "delivery_id": delivery_id,
            "new_delivery_id": row.id,
            "event_id": old.event_id,
        },
    )
    return row


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    """Every endpoint, oldest first."""
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries to list: of one endpoint, in one status, of one event type."""

    endpoint_id: int | None = None
    status: str | None = None
    event_type: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in DELIVERY_STATUSES:
            raise Invalid("bad_status", f"status is one of {', '.join(DELIVERY_STATUSES)}")


def delivery_page(
    session: Session, flt: DeliveryFilter, *, before: int | None = None, limit: int = PAGE
) -> tuple[list[WebhookDelivery], int | None]:
    """Deliveries newest first, paged by id; returns the page and the id to continue before."""
    stmt = select(WebhookDelivery)
    if flt.endpoint_id is not None:
        stmt = stmt.where(WebhookDelivery.endpoint_id == flt.endpoint_id)
    if flt.status:
        stmt = stmt.where(WebhookDelivery.status == flt.status)
    if flt.event_type:
        stmt = stmt.where(WebhookDelivery.event_type == flt.event_type)
    if flt.event_id:
        stmt = stmt.where(WebhookDelivery.event_id == flt.event_id)
    if before is not None:
        stmt = stmt.where(WebhookDelivery.id < before)
    rows = list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
    more = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], more
