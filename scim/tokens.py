"""Named bearer tokens for SCIM clients: made, listed, rotated and revoked by the CLI.

A token is shown once, when it is made or rotated; only its SHA-256 is kept.
Checking a presented token (:func:`match`) compares its hash with every live
token's hash in constant time (:func:`hmac.compare_digest`), without stopping
at the first match, so neither the lookup nor the comparison tells an attacker
how close a guess was; :mod:`scim.auth` does it for each request. Several
named tokens coexist (one per IdP, one for a migration script); revoking one
leaves the others working.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import utcnow
from idp_service.token_tables import ScimToken

PREFIX = "dtscim_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# last_used_at is refreshed at most this often, so a busy client costs no extra write.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class TokenError(ValueError):
    """A token command that cannot be carried out (unknown name, name taken...)."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise TokenError(
            "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return name


def _find(session: Session, name: str) -> ScimToken | None:
    return session.scalars(select(ScimToken).where(ScimToken.name == name)).first()


def create(session: Session, name: str, *, actor: str | None = "cli") -> str:
    """Make the token NAME and return it (the only time it is visible)."""
    _check_name(name)
    token = _new_token()
    row = _find(session, name)
    if row is not None and row.revoked_at is None:
        raise TokenError(f"a token named {name!r} exists; rotate it, or revoke it first")
    if row is None:
        row = ScimToken(name=name)
        session.add(row)
    row.token_hash = hash_token(token)
    row.previous_hash = None
    row.previous_valid_until = None
    row.created_at = utcnow()
    row.rotated_at = None
    row.revoked_at = None
    row.last_used_at = None
    session.flush()
    audit.record(session, "scim.token.create", "ok", actor=actor, details={"name": name})
    return token


def rotate(
    session: Session, name: str, *, grace_seconds: int = 0, actor: str | None = "cli"
) -> str:
    """Replace NAME's token and return the new one.

    The old token stops working at once, or after ``grace_seconds`` so that the
    client can be given the new one without a failed sync.
    """
    row = _find(session, name)
    if row is None or row.revoked_at is not None:
        raise TokenError(f"no live token named {name!r}")
    if grace_seconds < 0:
        raise TokenError("the grace period cannot be negative")
    token = _new_token()
    now = utcnow()
    row.previous_hash = row.token_hash if grace_seconds else None
    row.previous_valid_until = now + dt.timedelta(seconds=grace_seconds) if grace_seconds else None
    row.token_hash = hash_token(token)
    row.rotated_at = now
    session.flush()
    audit.record(
        session,
        "scim.token.rotate",
        "ok",
        actor=actor,
        details={"name": name, "grace_seconds": grace_seconds},
    )
    return token


def revoke(session: Session, name: str, *, actor: str | None = "cli") -> None:
    """Make NAME's token (and any token it replaced) stop working at once."""
    row = _find(session, name)
    if row is None or row.revoked_at is not None:
        raise TokenError(f"no live token named {name!r}")
    row.revoked_at = utcnow()
    row.token_hash = None
    row.previous_hash = None
    row.previous_valid_until = None
    session.flush()
    audit.record(session, "scim.token.revoke", "ok", actor=actor, details={"name": name})


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token by name, with its dates and state (never the token or its hash)."""
    rows = session.scalars(select(ScimToken).order_by(ScimToken.name))
    return [
        {
            "name": r.name,
            "state": "revoked" if r.revoked_at else "active",
            "created_at": r.created_at.isoformat() if r.created_at else None,
            "rotated_at": r.rotated_at.isoformat() if r.rotated_at else None,
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            "previous_valid_until": (
                r.previous_valid_until.isoformat() if r.previous_valid_until else None
            ),
        }
        for r in rows
    ]


def live_rows(session: Session) -> list[Any]:
    """The rows of every token that can still authenticate (current or in its grace)."""
    # Core on the session's connection: this runs on every request the cache misses.
    return list(
        session.connection().execute(
            select(
                ScimToken.id,
                ScimToken.name,
                ScimToken.token_hash,
                ScimToken.previous_hash,
                ScimToken.previous_valid_until,
                ScimToken.last_used_at,
            ).where(
                ScimToken.revoked_at.is_(None),
                or_(ScimToken.token_hash.is_not(None), ScimToken.previous_hash.is_not(None)),
            )
        )
    )


def match(rows: list[Any], digest: str, now: dt.datetime) -> Any | None:
    """The row whose current (or still graced previous) hash is ``digest``, or None.

    Every row's hashes are compared, in constant time, whatever matched before.
    """
    found = None
    for row in rows:
        current = hmac.compare_digest(digest, row.token_hash or "")
        previous = hmac.compare_digest(digest, row.previous_hash or "") and (
            row.previous_valid_until is not None and row.previous_valid_until > now
        )
        if (current or previous) and found is None:
            found = row
    return found
