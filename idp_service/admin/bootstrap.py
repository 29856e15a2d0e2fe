"""One-time bootstrap tokens: the first admin session, before any admin group exists.

``devicetrust admin bootstrap`` prints a token once; only its SHA-256 is stored.
A token lives one hour and opens one console session: redeeming it compares
its hash with every live token in constant time, then claims the row with a
conditional ``UPDATE``, so two concurrent uses cannot both succeed. Issuing and
every redemption attempt are audited (never with the token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from idp_service.admin.tables import AdminBootstrapToken
from idp_service.platform import audit
from idp_service.platform.models import utcnow

TTL = dt.timedelta(hours=1)
MAX_TOKEN = 128


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(session: Session, *, actor: str = "cli") -> tuple[str, AdminBootstrapToken]:
    """A new token (returned once, never stored) and its row."""
    token = "dtb_" + secrets.token_urlsafe(32)
    row = AdminBootstrapToken(
        token_hash=_digest(token), expires_at=utcnow() + TTL, created_by=actor
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        "admin.bootstrap_token",
        "ok",
        actor=actor,
        details={"id": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return token, row


def redeem(session: Session, token: str) -> int | None:
    """Use ``token`` once: the token's row id, or None when it is unknown, used or expired."""
    if not token or len(token) > MAX_TOKEN:
        return None
    wanted = _digest(token)
    now = utcnow()
    live = session.execute(
        select(AdminBootstrapToken.id, AdminBootstrapToken.token_hash).where(
            AdminBootstrapToken.used_at.is_(None), AdminBootstrapToken.expires_at > now
        )
    ).all()
    found: int | None = None
    for row_id, digest in live:  # no early exit: every live hash is compared
        if hmac.compare_digest(digest, wanted):
            found = row_id
    if found is None:
        return None
    claimed = session.execute(
        update(AdminBootstrapToken)
        .where(AdminBootstrapToken.id == found, AdminBootstrapToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return found if cast("CursorResult[Any]", claimed).rowcount == 1 else None
