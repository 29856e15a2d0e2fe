"""The audit event of each SCIM request, written with prebuilt statements.

Every SCIM request writes one ``audit_events`` row, so its INSERT is built once
and executed with parameters: SQLAlchemy then neither builds nor compiles a
statement per request (building one with ``.values(...)`` cost more CPU than
PostgreSQL spends running it).

A request made with a token writes its event with :func:`record_use`, an
``INSERT … SELECT … FROM scim_tokens WHERE`` the token's row is still live: the
event is written, and the request may commit, only if the token was not revoked
or rotated away in the meantime (see :mod:`scim.auth`). Same predicate as
:func:`idp_service.tokens.match`: not revoked, and the hash is the current one or a
previous one still in its grace period.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select
from sqlalchemy.orm import Session

from idp_service.platform.audit_chain import with_mac
from idp_service.platform.models import AuditEvent, utcnow
from idp_service.token_tables import ScimToken
from scim.auth import Grant

EVENTS = AuditEvent.__table__
FIELDS = ("at", "action", "outcome", "code", "actor", "user_id", "remote_addr", "details", "mac")

_PLAIN = insert(EVENTS).inline()  # no RETURNING of the new id
_IF_LIVE = (
    insert(EVENTS)
    .from_select(
        list(FIELDS),
        select(*(bindparam(f, type_=EVENTS.c[f].type) for f in FIELDS))
        .select_from(ScimToken.__table__)
        .where(
            ScimToken.id == bindparam("token_id"),
            ScimToken.revoked_at.is_(None),
            or_(
                ScimToken.token_hash == bindparam("digest"),
                and_(
                    ScimToken.previous_hash == bindparam("digest"),
                    ScimToken.previous_valid_until > bindparam("at"),
                ),
            ),
        ),
    )
    .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps it for UPDATE/DELETE only
)


def event(
    action: str,
    outcome: str,
    *,
    details: dict[str, Any],
    code: str | None = None,
    actor: str | None = None,
    user_id: str | None = None,
    remote_addr: str | None = None,
) -> dict[str, Any]:
    """The parameters of one audit event, stamped now."""
    return {
        "at": utcnow(),
        "action": action,
        "outcome": outcome,
        "code": code,
        "actor": actor,
        "user_id": user_id,
        "remote_addr": remote_addr,
        "details": details,
    }


def record(session: Session, values: dict[str, Any]) -> None:
    """Write an event in the session's transaction (with its MAC, see audit_chain)."""
    session.connection().execute(_PLAIN, with_mac(values))


def record_use(session: Session, grant: Grant, values: dict[str, Any]) -> bool:
    """Write the event of a request made with ``grant``'s token, if the token is still live.

    Returns False, having written nothing, if the token was revoked or rotated
    away since it was checked: the caller must then roll the request back.
    """
    params = {**with_mac(values), "token_id": grant.token_id, "digest": grant.digest}
    return session.connection().execute(_IF_LIVE, params).rowcount == 1
