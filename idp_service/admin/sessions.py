"""Server-side console sessions: open, look up, and end them.

A session is an ``admin_sessions`` row; the browser holds a random secret
(in the signed Flask cookie) whose SHA-256 is the row id. Every request looks
the row up, so ending the row ends every copy of the cookie: sign-out ends
this session; a failed recheck (admin-group removal, device no longer trusted)
ends it too. A SCIM deactivation or deletion, an admin-group change and a device
revocation end sessions through ``idp_service/directory/sessions.py``, below the
console.

The checks behind a console session live here too: :func:`recheck` (every request),
:func:`in_admin_group`, and :func:`finish_login`, which claims a finished sign-in's
transaction once and decides whether it may open a session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from idp_service.directory.groups import group_keys_of
from idp_service.platform import audit
from idp_service.platform.identity import name_key
from idp_service.platform.models import Device, LoginTransaction, User, utcnow
from idp_service.platform.session_tables import AdminSession


def _rowcount(result: object) -> int:
    """How many rows an UPDATE changed."""
    return int(cast("CursorResult[Any]", result).rowcount)


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
    return _rowcount(
        session.execute(
            update(AdminSession)
            .where(
                AdminSession.user_id == user_id,
                AdminSession.id != current_id,
                AdminSession.ended_at.is_(None),
            )
            .values(ended_at=utcnow(), ended_reason="ended_by_owner")
            .execution_options(synchronize_session=False)
        )
    )


def end(session: Session, secret: str, reason: str) -> None:
    """End the session of ``secret`` (idempotent)."""
    if isinstance(secret, str) and secret:
        session.execute(
            update(AdminSession)
            .where(AdminSession.id == _digest(secret), AdminSession.ended_at.is_(None))
            .values(ended_at=utcnow(), ended_reason=reason)
            .execution_options(synchronize_session=False)
        )


def in_admin_group(session: Session, user_id: str, admin_group: str) -> bool:
    """True when the user is in ``admin_group`` (directly or nested).

    The group is the one whose stored key equals the setting's
    :func:`~idp_service.platform.identity.name_key`, compared exactly: keys are unique, so
    at most one group is the admin group, and a look-alike name that keys the
    same (``devicetrust-adminſ``) was refused when SCIM tried to write it.
    """
    return bool(admin_group) and name_key(admin_group) in group_keys_of(session, user_id)


def recheck(session: Session, row: AdminSession, admin_group: str) -> str | None:
    """Why the live session ``row`` may no longer be used, or None when it still may.

    A bootstrap session stands on its own; a device session needs its user active,
    its device trusted and still theirs, and the user in ``admin_group``, now.
    """
    if row.via == "bootstrap":
        return None
    if row.via != "device" or not row.user_id or not row.device_id:
        return "invalid"
    user = session.get(User, row.user_id)
    device = session.get(Device, row.device_id)
    if user is None or not user.active:
        return "owner_inactive"
    if device is None or device.state != "trusted" or device.user_id != user.id:
        return "device_not_trusted"
    if not in_admin_group(session, user.id, admin_group):
        return "not_admin"
    return None


def finish_login(
    session: Session,
    txn: LoginTransaction,
    user: User | None,
    device: Device | None,
    *,
    admin_group: str,
    remote_addr: str | None,
    upstream_proved: Callable[[str], bool] | None = None,
) -> str | None:
    """Claim the sign-in's transaction and decide, audited (``admin.login``): None when a
    session may open, else the refusal code.

    The claim comes first and holds once: a transaction claimed already (a repeated
    ``/continue``) is ``login_finished``, whatever it says. ``upstream_proved``, when the
    console signs in through the upstream IdP, tells whether that sign-in proved this user
    (``upstream_required`` otherwise).
    """
    result = session.execute(
        update(LoginTransaction)
        .where(LoginTransaction.id == txn.id, LoginTransaction.completed_at.is_(None))
        .values(completed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    claimed = _rowcount(result)
    code: str | None = None
    if claimed != 1:
        code = "login_finished"
    elif txn.status != "verified" or user is None or device is None:
        code = txn.error_code or "expired"
    elif not in_admin_group(session, user.id, admin_group):
        code = "not_admin"
    elif upstream_proved is not None and not upstream_proved(user.id):
        code = "upstream_required"  # the console's upstream sign-in, as this device's owner
    audit.record(
        session,
        "admin.login",
        "ok" if code is None else "denied",
        code=code,
        actor=f"admin:{user.user_name}" if user is not None else None,
        user_id=txn.user_id,
        device_id=txn.device_id,
        remote_addr=remote_addr,
    )
    return code
