"""Append-only audit events (tamper evidence in ``idp_service/platform/audit_chain.py``).

An event is written in the caller's transaction when the decision commits with
it, or on its own with :func:`record_separately` when the request failed and
nothing else may be written. Never put secrets, codes or tokens in ``details``.

Features that react to audited decisions (webhooks enqueue their deliveries)
register a sink with :func:`subscribe` when the process is composed (the app
factory and the CLI do it); every sink is called with each event, in the same
session, so what it adds commits or rolls back with the decision. The platform
itself knows no feature.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from idp_service.platform.audit_keys import with_mac
from idp_service.platform.db import Database
from idp_service.platform.models import AuditEvent, utcnow


@dataclass(frozen=True)
class Recorded:
    """One audit event as it was written (what a sink sees)."""

    at: dt.datetime
    action: str
    outcome: str
    code: str | None
    actor: str | None
    user_id: str | None
    device_id: str | None
    remote_addr: str | None
    details: dict[str, Any] | None


class Sink(Protocol):
    """Called with every audit event, in the session that writes it."""

    def __call__(self, session: Session, event: Recorded) -> None: ...


_sinks: tuple[Sink, ...] = ()


def subscribe(sink: Sink) -> None:
    """Call ``sink`` for every event this process records from now on (once, however
    often it is subscribed)."""
    global _sinks
    if sink not in _sinks:
        _sinks = (*_sinks, sink)


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
    """Add an audit event to ``session`` (committed with the caller's transaction),
    and hand it to every subscribed sink in the same session."""
    event = Recorded(
        at=utcnow(),
        action=action,
        outcome=outcome,
        code=code,
        actor=actor,
        user_id=user_id,
        device_id=device_id,
        remote_addr=remote_addr,
        details=details,
    )
    session.add(
        AuditEvent(
            **with_mac(
                {
                    "at": event.at,
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
    for sink in _sinks:
        sink(session, event)


def record_separately(db: Database, action: str, outcome: str, **kwargs: Any) -> None:
    """Write one audit event in its own transaction (after the caller rolled back)."""
    with db.session() as session:
        record(session, action, outcome, **kwargs)
