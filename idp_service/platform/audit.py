"""Append-only audit events (tamper evidence in ``idp_service/platform/audit_chain.py``).

An event is written in the caller's transaction when the decision commits with
it, or on its own with :func:`record_separately` when the request failed and
nothing else may be written. Never put secrets, codes or tokens in ``details``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from idp_service.platform.audit_chain import with_mac
from idp_service.platform.db import Database
from idp_service.platform.models import AuditEvent, utcnow
from idp_service.webhooks.catalog import EVENT_TYPES


def record(
    session: Session,
    action: str,
    outcome: str,
    *,
    code: str | None = None,
    actor: str | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    remote_addr: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to ``session`` (committed with the caller's transaction).

    An ``ok`` decision that is a webhook event (``webhooks/catalog.py``) also
    enqueues its deliveries in the same transaction.
    """
    at = utcnow()
    session.add(
        AuditEvent(
            **with_mac(
                {
                    "at": at,
                    "action": action,
                    "outcome": outcome,
                    "code": code,
                    "actor": actor,
                    "user_id": user_id,
                    "device_id": device_id,
                    "remote_addr": remote_addr,
                    "details": details,
                }
            )
        )
    )
    if outcome == "ok" and action in EVENT_TYPES:
        from idp_service.webhooks import catalog, outbox

        found = catalog.events_for(
            action, actor=actor, user_id=user_id, device_id=device_id, details=details
        )
        outbox.enqueue(session, found, at)


def record_separately(db: Database, action: str, outcome: str, **kwargs: Any) -> None:
    """Write one audit event in its own transaction (after the caller rolled back)."""
    with db.session() as session:
        record(session, action, outcome, **kwargs)
