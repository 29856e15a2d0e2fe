"""Named bearer tokens, the admin API's and SCIM's: made, checked, rotated and revoked here.

A token is shown once, when it is made (or, for SCIM, rotated); only its
SHA-256 is stored. A presented token's hash is compared with every live
token's hash in constant time (:func:`hmac.compare_digest`), without stopping
at the first match, so neither the lookup nor the comparison tells an attacker
how close a guess was. Several named tokens coexist (one per client); revoking
one leaves the others working. Every change is audited, never the token.

The two kinds differ only in what :class:`Kind` declares: an admin-API token
has a scope (``read`` or ``write``); a SCIM token can be rotated, its old value
working for a grace period so a client can be switched without a failed sync.
Tokens are made, listed, rotated and revoked by ``devicetrust api-token`` and
``devicetrust scim-token`` (:mod:`idp_service.tokens_cli`); neither API can
mint them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from idp_service.platform import audit
from idp_service.platform.models import utcnow
from idp_service.token_tables import API_SCOPES, ApiToken, ScimToken

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# last_used_at is refreshed at most this often, so a busy client costs no extra write.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class TokenError(ValueError):
    """A token command that cannot be carried out (bad name, name taken, unknown name...)."""


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def match(rows: list[Any], digest: str, now: dt.datetime) -> Any | None:
    """The row whose current (or still graced previous) hash is ``digest``, or None.

    Every row's hashes are compared, in constant time, whatever matched before.
    Rows without a ``previous_hash`` column (admin-API tokens) match on the
    current hash alone.
    """
    found = None
    for row in rows:
        current = hmac.compare_digest(digest, row.token_hash or "")
        previous_hash = getattr(row, "previous_hash", None)
        previous_until = getattr(row, "previous_valid_until", None)
        previous = hmac.compare_digest(digest, previous_hash or "") and (
            previous_until is not None and previous_until > now
        )
        if (current or previous) and found is None:
            found = row
    return found


@dataclass(frozen=True)
class Kind:
    """One kind of bearer token: its table, prefix, audit events and what it can do."""

    label: str  # how messages name it: "API", "SCIM"
    command: str  # the CLI group that manages it
    prefix: str  # every token starts with it, so a leaked one is recognisable
    table: type[ApiToken] | type[ScimToken]
    audit_prefix: str  # "<prefix>.create", ".rotate", ".revoke"
    scopes: tuple[str, ...] = ()  # empty: the kind has no scope
    rotates: bool = False  # True: rotate() keeps the old token for a grace period
    unknown_hint: str = ""  # appended to "no live token named ..."

    # -- management (the CLI) ------------------------------------------------------------

    def _find(self, session: Session, name: str) -> Any | None:
        return session.scalars(select(self.table).where(self.table.name == name)).first()

    def _live(self, session: Session, name: str) -> Any:
        row = self._find(session, name)
        if row is None or row.revoked_at is not None:
            raise TokenError(f"no live token named {name!r}{self.unknown_hint}")
        return row

    def new_token(self) -> str:
        """A fresh random token of this kind (not yet stored)."""
        return self.prefix + secrets.token_urlsafe(32)

    def create(
        self, session: Session, name: str, scope: str | None = None, *, actor: str | None = "cli"
    ) -> str:
        """Make the token NAME (with ``scope``, for a kind that has one) and return it.

        This is the only time the token is visible; a revoked token's name can be reused.
        """
        if not NAME_RE.fullmatch(name):
            raise TokenError(
                "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        if self.scopes and scope not in self.scopes:
            raise TokenError(f"scope must be one of {', '.join(self.scopes)}")
        # Either kind's row: the scope and rotation columns exist where self.scopes and
        # self.rotates say so.
        row: Any = self._find(session, name)
        if row is not None and row.revoked_at is None:
            then = "rotate it, or revoke it first" if self.rotates else "revoke it first"
            raise TokenError(f"a token named {name!r} exists; {then}")
        if row is None:
            row = self.table(name=name)
            session.add(row)
        token = self.new_token()
        details: dict[str, Any] = {"name": name}
        if self.scopes:
            row.scope = scope
            details["scope"] = scope
        row.token_hash = hash_token(token)
        if self.rotates:
            row.previous_hash = None
            row.previous_valid_until = None
            row.rotated_at = None
        row.created_at = utcnow()
        row.revoked_at = None
        row.last_used_at = None
        session.flush()
        audit.record(session, f"{self.audit_prefix}.create", "ok", actor=actor, details=details)
        return token

    def rotate(
        self, session: Session, name: str, *, grace_seconds: int = 0, actor: str | None = "cli"
    ) -> str:
        """Replace NAME's token and return the new one.

        The old token stops working at once, or after ``grace_seconds`` so that the
        client can be given the new one without a failed request.
        """
        if not self.rotates:
            raise TokenError(f"{self.label} tokens are not rotated: revoke it and make a new one")
        row = self._live(session, name)
        if grace_seconds < 0:
            raise TokenError("the grace period cannot be negative")
        token = self.new_token()
        now = utcnow()
        row.previous_hash = row.token_hash if grace_seconds else None
        row.previous_valid_until = (
            now + dt.timedelta(seconds=grace_seconds) if grace_seconds else None
        )
        row.token_hash = hash_token(token)
        row.rotated_at = now
        session.flush()
        audit.record(
            session,
            f"{self.audit_prefix}.rotate",
            "ok",
            actor=actor,
            details={"name": name, "grace_seconds": grace_seconds},
        )
        return token

    def revoke(self, session: Session, name: str, *, actor: str | None = "cli") -> None:
        """Make NAME's token (and any token it replaced) stop working at once."""
        row = self._live(session, name)
        row.revoked_at = utcnow()
        row.token_hash = None
        if self.rotates:
            row.previous_hash = None
            row.previous_valid_until = None
        session.flush()
        audit.record(
            session, f"{self.audit_prefix}.revoke", "ok", actor=actor, details={"name": name}
        )

    def describe(self, row: Any) -> dict[str, Any]:
        """A token as ``list`` shows it: name, dates and state, never the token or its hash."""
        out: dict[str, Any] = {"name": row.name}
        if self.scopes:
            out["scope"] = row.scope
        out["state"] = "revoked" if row.revoked_at else "active"
        out["created_at"] = _iso(row.created_at)
        if self.rotates:
            out["rotated_at"] = _iso(row.rotated_at)
        out["revoked_at"] = _iso(row.revoked_at)
        out["last_used_at"] = _iso(row.last_used_at)
        if self.rotates:
            out["previous_valid_until"] = _iso(row.previous_valid_until)
        return out

    def list_tokens(self, session: Session) -> list[dict[str, Any]]:
        """Every token of this kind by name (see :meth:`describe`)."""
        rows = session.scalars(select(self.table).order_by(self.table.name))
        return [self.describe(r) for r in rows]

    # -- checking a presented token (every request) ----------------------------------------

    def live_rows(self, session: Session) -> list[Any]:
        """The rows of every token that can still authenticate (current or in its grace)."""
        t: Any = self.table  # either kind's table (see create)
        columns: list[Any] = [t.id, t.name, t.token_hash, t.last_used_at]
        usable: Any = t.token_hash.is_not(None)
        if self.scopes:
            columns.append(t.scope)
        if self.rotates:
            columns += [t.previous_hash, t.previous_valid_until]
            usable = or_(usable, t.previous_hash.is_not(None))
        # Core on the session's connection: this runs for every request that checks a token.
        return list(
            session.connection().execute(select(*columns).where(t.revoked_at.is_(None), usable))
        )

    def touch(self, session: Session, token_id: int, now: dt.datetime) -> None:
        """Record that token ``token_id`` was used at ``now``."""
        session.connection().execute(
            update(self.table).where(self.table.id == token_id).values(last_used_at=now)
        )

    def authenticate(self, session: Session, presented: str) -> Any | None:
        """The live row ``presented`` is (``id``, ``name``, ``scope`` if any), or None.

        Compared in constant time against every live token; ``last_used_at`` is
        refreshed at most once per :data:`LAST_USED_RESOLUTION`.
        """
        now = utcnow()
        found = match(self.live_rows(session), hash_token(presented), now)
        if found is None:
            return None
        if found.last_used_at is None or now - found.last_used_at > LAST_USED_RESOLUTION:
            self.touch(session, found.id, now)
        return found


API = Kind(
    label="API",
    command="api-token",
    prefix="dtapi_",
    table=ApiToken,
    audit_prefix="api.token",
    scopes=API_SCOPES,
    unknown_hint="; see: devicetrust api-token list",
)
SCIM = Kind(
    label="SCIM",
    command="scim-token",
    prefix="dtscim_",
    table=ScimToken,
    audit_prefix="scim.token",
    rotates=True,
)
