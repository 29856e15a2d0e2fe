"""Append-only audit events (tamper evidence in ``idp_service/audit_chain.py``).

An event is written in the caller's transaction when the decision commits with
it, or on its own with :func:`record_separately` when the request failed and
nothing else may be written. Never put secrets, codes or tokens in ``details``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from idp_service.audit_chain import with_mac
from idp_service.storage.db import Database
from idp_service.storage.models import AuditEvent


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
    """Add an audit event to ``session`` (committed with the caller's transaction)."""
    session.add(
        AuditEvent(
            **with_mac(
                {
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


def record_separately(db: Database, action: str, outcome: str, **kwargs: Any) -> None:
    """Write one audit event in its own transaction (after the caller rolled back)."""
    with db.session() as session:
        record(session, action, outcome, **kwargs)
