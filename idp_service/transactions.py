"""Login transactions: one per sign-in attempt, created before its challenge.

A transaction is the thing a challenge is bound to (``binding = "login:" + id``)
and the thing the login page polls. It moves ``pending`` -> ``verified`` when a
verified device response arrives on either path (the browser's fetch or the
agent's direct callback), or ``pending`` -> ``denied`` with a reason.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from idp_service.storage.models import LoginTransaction, utcnow

BINDING_PREFIX = "login:"


def binding_for(txn_id: str) -> str:
    """The challenge binding of a transaction."""
    return BINDING_PREFIX + txn_id


def txn_id_from_binding(binding: str) -> str | None:
    """The transaction id a binding names, or None for other bindings."""
    return binding[len(BINDING_PREFIX) :] if binding.startswith(BINDING_PREFIX) else None


def create(session: Session, *, ttl_seconds: int, context: dict[str, Any] | None = None) -> str:
    """Start a transaction and return its id (128 random bits, base64url)."""
    txn_id = secrets.token_urlsafe(16)
    session.add(
        LoginTransaction(
            id=txn_id,
            status="pending",
            context=context or {},
            expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        )
    )
    return txn_id


def mark_verified(session: Session, txn_id: str, *, device_id: str, user_id: str) -> bool:
    """Move a pending transaction to verified; False if it was not pending or has expired."""
    now = utcnow()
    result = session.execute(
        update(LoginTransaction)
        .where(
            LoginTransaction.id == txn_id,
            LoginTransaction.status == "pending",
            LoginTransaction.expires_at > now,
        )
        .values(status="verified", device_id=device_id, user_id=user_id, verified_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_denied(
    session: Session, txn_id: str, *, code: str, device_id: str | None, user_id: str | None
) -> None:
    """Record why a pending transaction was refused (a device-state decision, not bad input)."""
    session.execute(
        update(LoginTransaction)
        .where(LoginTransaction.id == txn_id, LoginTransaction.status == "pending")
        .values(status="denied", error_code=code, device_id=device_id, user_id=user_id)
        .execution_options(synchronize_session=False)
    )


def is_open(txn: LoginTransaction | None) -> bool:
    """True for a transaction that may still get a challenge."""
    return txn is not None and txn.status == "pending" and txn.expires_at > utcnow()
