"""Tables of the webhooks (events): endpoints, and the delivery outbox and log (revision ``0011``).

An event is enqueued as one ``webhook_deliveries`` row per matching active
endpoint, in the transaction of the decision it reports (``idp_service/webhooks``),
so a delivery exists exactly when its decision committed. The same rows are the
dispatcher's queue (``status``, ``next_attempt_at``) and the delivery log the
console and API page through (by ``id``, per endpoint). An endpoint's signing
secret is stored as it is: the service must be able to sign with it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow

DELIVERY_STATUSES = ("pending", "delivered", "failed")


class WebhookEndpoint(Base):
    """A URL that receives signed events, optionally only some event types."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(256), default="")
    # None: every event type; else the list of event types this endpoint wants.
    event_types: Mapped[list[str] | None] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(64))  # whsec_<base64>; never shown again
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, its retry state and its log entry."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36), index=True)  # webhook-id (a UUID)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due (pending); while a dispatcher holds a claim, when it lapses.
    next_attempt_at: Mapped[dt.datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(256))
    last_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None]


# The dispatcher: pending rows that are due, oldest first.
Index("ix_webhook_deliveries_due", WebhookDelivery.status, WebhookDelivery.next_attempt_at)
# The delivery log of one endpoint, newest first (the whole log pages by primary key).
Index("ix_webhook_deliveries_endpoint_id", WebhookDelivery.endpoint_id, WebhookDelivery.id)
