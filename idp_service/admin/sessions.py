"""Server-side console sessions: open, look up, and end them.

A session is an ``admin_sessions`` row; the browser holds a random secret
(in the signed Flask cookie) whose SHA-256 is the row id. Every request looks
the row up, so ending the row ends every copy of the cookie: sign-out ends
this session; a failed recheck (admin-group removal, device no longer trusted)
ends it too. A SCIM deactivation or deletion, an admin-group change and a device
revocation end sessions through ``idp_service/directory/sessions.py``, below the
console.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.platform.models import utcnow
from idp_service.platform.session_tables import AdminSession


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def open_row(
    session: Session,
    *,
    via: str,
    user_name: str,
    user_id: str | None,
    device_id: str | None,
    ttl_seconds: int,
) -> str:
    """Record a new session; return its secret (for the cookie only, never stored)."""
    secret = secrets.token_urlsafe(32)
    session.add(
        AdminSession(
            id=_digest(secret),
            via=via,
            user_name=user_name,
            user_id=user_id,
            device_id=device_id,
            created_at=utcnow(),
            expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()
    return secret


def live(session: Session, secret: str) -> AdminSession | None:
    """The live (not ended, not expired) session of ``secret``, or None."""
    if not isinstance(secret, str) or not 32 <= len(secret) <= 128:
        return None
    return session.execute(
        select(AdminSession).where(
            AdminSession.id == _digest(secret),
            AdminSession.ended_at.is_(None),
            AdminSession.expires_at > utcnow(),
        )
    ).scalar_one_or_none()


def others(session: Session, user_id: str, current_id: str) -> list[AdminSession]:
    """The user's other live sessions, newest first (shown on the overview)."""
    return list(
        session.scalars(
            select(AdminSession)
            .where(
                AdminSession.user_id == user_id,
                AdminSession.id != current_id,
                AdminSession.ended_at.is_(None),
                AdminSession.expires_at > utcnow(),
            )
            .order_by(AdminSession.created_at.desc())
        )
    )


def end_others(session: Session, user_id: str, current_id: str) -> int:
    """End every live session of the user but ``current_id``; return how many were ended."""
    return session.execute(
        update(AdminSession)
        .where(
            AdminSession.user_id == user_id,
            AdminSession.id != current_id,
            AdminSession.ended_at.is_(None),
        )
        .values(ended_at=utcnow(), ended_reason="ended_by_owner")
        .execution_options(synchronize_session=False)
    ).rowcount


def end(session: Session, secret: str, reason: str) -> None:
    """End the session of ``secret`` (idempotent)."""
    if isinstance(secret, str) and secret:
        session.execute(
            update(AdminSession)
            .where(AdminSession.id == _digest(secret), AdminSession.ended_at.is_(None))
            .values(ended_at=utcnow(), ended_reason=reason)
            .execution_options(synchronize_session=False)
        )
