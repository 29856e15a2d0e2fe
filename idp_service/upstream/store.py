"""The statements of an upstream sign-in: record a request, claim it once, record whom it proved."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from idp_service.platform.models import LoginTransaction, User, utcnow
from idp_service.upstream.tables import UpstreamLogin


def state_hash(state: str) -> str:
    """The stored form of a ``state``: SHA-256 hex."""
    return hashlib.sha256(state.encode()).hexdigest()


def open_transaction(session: Session, txn_id: str) -> LoginTransaction | None:
    """The login transaction if it is pending and not expired."""
    txn = session.get(LoginTransaction, txn_id)
    if txn is None or txn.status != "pending" or txn.expires_at <= utcnow():
        return None
    return txn


REVERIFY_CODES = ("reverify_required", "reauth_reused")


def reverify_transaction(session: Session, txn_id: str) -> LoginTransaction | None:
    """The transaction if it was denied only for want of an upstream sign-in, and may retry."""
    txn = session.get(LoginTransaction, txn_id)
    if (
        txn is None
        or txn.status != "denied"
        or txn.error_code not in REVERIFY_CODES
        or txn.completed_at is not None
        or txn.expires_at <= utcnow()
    ):
        return None
    return txn


def approval_transaction(session: Session, txn_id: str) -> LoginTransaction | None:
    """The transaction if it waits only for its device's approval (``device_pending``)."""
    txn = session.get(LoginTransaction, txn_id)
    if (
        txn is None
        or txn.status != "denied"
        or txn.error_code != "device_pending"
        or txn.completed_at is not None
        or txn.expires_at <= utcnow()
    ):
        return None
    return txn


def reopen_for_reverify(session: Session, txn_id: str) -> None:
    """Let a sign-in denied for want of an upstream sign-in try again, now that it had one."""
    session.execute(
        update(LoginTransaction)
        .where(
            LoginTransaction.id == txn_id,
            LoginTransaction.status == "denied",
            LoginTransaction.error_code.in_(REVERIFY_CODES),
            LoginTransaction.completed_at.is_(None),
            LoginTransaction.expires_at > utcnow(),
        )
        .values(status="pending", error_code=None, device_id=None, user_id=None)
        .execution_options(synchronize_session=False)
    )


def add(
    session: Session,
    *,
    state: str,
    idp: str,
    txn_id: str,
    purpose: str,
    nonce: str,
    code_verifier: str,
    expires_at: dt.datetime,
) -> None:
    """Record a new authorization request."""
    session.add(
        UpstreamLogin(
            state_hash=state_hash(state),
            idp=idp,
            txn_id=txn_id,
            purpose=purpose,
            nonce=nonce,
            code_verifier=code_verifier,
            expires_at=expires_at,
        )
    )


def claim(session: Session, state: str) -> UpstreamLogin | None:
    """Use the request ``state`` names, once and before its expiry; None if it cannot be."""
    digest = state_hash(state)
    now = utcnow()
    result = session.execute(
        update(UpstreamLogin)
        .where(
            UpstreamLogin.state_hash == digest,
            UpstreamLogin.used_at.is_(None),
            UpstreamLogin.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", result).rowcount != 1:
        return None
    return session.get(UpstreamLogin, digest, populate_existing=True)


def why_unclaimable(session: Session, state: str) -> str:
    """For the audit log: ``unknown``, ``used`` or ``expired``."""
    row = session.get(UpstreamLogin, state_hash(state))
    if row is None:
        return "unknown"
    return "used" if row.used_at is not None else "expired"


def mark_verified(session: Session, state_digest: str, user_id: str, subject: str) -> None:
    """Record whom the request proved."""
    session.execute(
        update(UpstreamLogin)
        .where(UpstreamLogin.state_hash == state_digest)
        .values(user_id=user_id, subject=subject[:256], verified_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def verified_user(
    session: Session, txn_id: str, purpose: str, *, since: dt.datetime | None = None
) -> User | None:
    """The active user an upstream sign-in for ``purpose`` proved within ``txn_id``, if any."""
    query = (
        select(User)
        .join(UpstreamLogin, UpstreamLogin.user_id == User.id)
        .where(
            UpstreamLogin.txn_id == txn_id,
            UpstreamLogin.purpose == purpose,
            UpstreamLogin.verified_at.is_not(None),
        )
        .order_by(UpstreamLogin.verified_at.desc())
        .limit(1)
    )
    if since is not None:
        query = query.where(UpstreamLogin.verified_at >= since)
    user = session.scalars(query).first()
    if user is None or not user.active or user.deleted_at is not None:
        return None
    return user


def delete_expired(session: Session, before: dt.datetime) -> int:
    """Forget requests that expired before ``before`` (the expiry clean-up)."""
    result = session.execute(delete(UpstreamLogin).where(UpstreamLogin.expires_at < before))
    return cast("CursorResult[Any]", result).rowcount
