"""Ending console sessions when the directory or a device decision says so.

A SCIM deactivation or deletion ends all of the user's sessions; a change to a
group ends the device sessions of users no longer in the admin group; a device
revoked, blocked or deleted ends the sessions opened through it. These sit
below the console (``idp_service/admin/sessions.py`` opens and looks sessions
up) so SCIM and the device state machine use them without importing it; each
runs in the caller's transaction.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Executable, select, update
from sqlalchemy.orm import Session

from idp_service.directory.groups import group_keys_of
from idp_service.platform.identity import name_key
from idp_service.platform.models import utcnow
from idp_service.platform.session_tables import AdminSession


def _count(session: Session, statement: Executable) -> int:
    """Run an UPDATE; how many rows it changed."""
    result = session.execute(statement)
    return cast("CursorResult[Any]", result).rowcount


def end_for_user(session: Session, user_id: str, reason: str) -> int:
    """End every live session of a user; return how many were ended."""
    return _count(
        session,
        update(AdminSession)
        .where(AdminSession.user_id == user_id, AdminSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_reason=reason)
        .execution_options(synchronize_session=False),
    )


def end_where_not_admin(session: Session, admin_group: str) -> int:
    """End every live device session whose user is no longer in ``admin_group``.

    SCIM calls it after a group changes (members, name, deletion), so the
    session ends then, not only at its next request: a removal and a re-adding
    between two requests still ends it. Live console sessions are few.
    """
    wanted = name_key(admin_group)
    rows = session.execute(
        select(AdminSession.id, AdminSession.user_id).where(
            AdminSession.via == "device",
            AdminSession.ended_at.is_(None),
            AdminSession.expires_at > utcnow(),
        )
    ).all()
    ended = 0
    for row_id, user_id in rows:
        if user_id is None or wanted not in group_keys_of(session, user_id):
            ended += _count(
                session,
                update(AdminSession)
                .where(AdminSession.id == row_id, AdminSession.ended_at.is_(None))
                .values(ended_at=utcnow(), ended_reason="not_admin")
                .execution_options(synchronize_session=False),
            )
    return ended


def end_for_device(session: Session, device_id: str, reason: str) -> int:
    """End every live session opened through a device; return how many were ended."""
    return _count(
        session,
        update(AdminSession)
        .where(AdminSession.device_id == device_id, AdminSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_reason=reason)
        .execution_options(synchronize_session=False),
    )
