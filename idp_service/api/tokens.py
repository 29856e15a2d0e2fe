"""Named bearer tokens for the admin API, with a scope: ``read`` or ``write``.

A token is shown once, when made; only its SHA-256 is stored. A presented
token's hash is compared with every live token's hash in constant time
(:func:`hmac.compare_digest`) without stopping at the first match. Tokens are
made, listed and revoked with ``devicetrust api-token``; the API cannot mint them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import utcnow
from idp_service.token_tables import API_SCOPES, ApiToken

PREFIX = "dtapi_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# last_used_at is refreshed at most this often, so a busy client costs no extra write.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class TokenError(ValueError):
    """A token command that cannot be carried out (bad name, name taken, unknown name)."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _find(session: Session, name: str) -> ApiToken | None:
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).first()


def create(session: Session, name: str, scope: str, *, actor: str | None = "cli") -> str:
    """Make the token NAME with ``scope`` and return it (the only time it is visible)."""
    if not NAME_RE.fullmatch(name):
        raise TokenError(
            "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    if scope not in API_SCOPES:
        raise TokenError(f"scope must be one of {', '.join(API_SCOPES)}")
    row = _find(session, name)
    if row is not None and row.revoked_at is None:
        raise TokenError(f"a token named {name!r} exists; revoke it first")
    if row is None:
        row = ApiToken(name=name)
        session.add(row)
    token = PREFIX + secrets.token_urlsafe(32)
    row.scope = scope
    row.token_hash = hash_token(token)
    row.created_at = utcnow()
    row.revoked_at = None
    row.last_used_at = None
    session.flush()
    audit.record(
        session, "api.token.create", "ok", actor=actor, details={"name": name, "scope": scope}
    )
    return token


def revoke(session: Session, name: str, *, actor: str | None = "cli") -> None:
    """Revoke the token NAME at once."""
    row = _find(session, name)
    if row is None or row.revoked_at is not None:
        raise TokenError(f"no live token named {name!r}; see: devicetrust api-token list")
    row.revoked_at = utcnow()
    row.token_hash = None
    audit.record(session, "api.token.revoke", "ok", actor=actor, details={"name": name})


def token_json(row: ApiToken) -> dict[str, Any]:
    """A token as ``api-token list`` shows it (never the token or its hash)."""
    return {
        "name": row.name,
        "scope": row.scope,
        "state": "revoked" if row.revoked_at else "active",
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


def list_tokens(session: Session) -> list[dict[str, Any]]:
    """Every token by name."""
    return [token_json(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def authenticate(session: Session, presented: str) -> tuple[str, str] | None:
    """``(name, scope)`` of the live token ``presented`` is, or None; compared in constant time."""
    digest = hash_token(presented)
    rows = session.execute(
        select(
            ApiToken.id, ApiToken.name, ApiToken.scope, ApiToken.token_hash, ApiToken.last_used_at
        ).where(ApiToken.revoked_at.is_(None))
    ).all()
    found = None
    for row in rows:
        # Every live hash is compared; no early exit.
        if row.token_hash and hmac.compare_digest(row.token_hash, digest) and found is None:
            found = row
    if found is None:
        return None
    now = utcnow()
    if found.last_used_at is None or now - found.last_used_at > LAST_USED_RESOLUTION:
        session.execute(update(ApiToken).where(ApiToken.id == found.id).values(last_used_at=now))
    return found.name, found.scope
