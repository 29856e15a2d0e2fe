"""Login transactions: one per sign-in attempt, created before its challenge.

A transaction is the thing a challenge is bound to (``binding = "login:" + id``)
and the thing the login page polls. It is *verified* as soon as one of its
challenges has been consumed with result ``ok`` (on either path: the browser's
fetch or the agent's direct callback) -- the challenge row is the single source
of truth, so the sign-in hot path writes nothing else. A device decision
(revoked, pending, ...) moves it ``pending`` -> ``denied`` with a reason. When
the page continues, :func:`settle` copies the outcome onto the transaction row.

A transaction's ``context`` says who started it (``kind``: ``saml``, ``admin``,
``local``) and what that surface needs to finish it; an identity broker's
subject (factor mode) is read from it by :func:`tofu_subject` and compared with
:func:`same_user`, both by the SAML completer and by the login page's TOFU
registration.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.platform import metrics
from idp_service.platform.identity import name_key
from idp_service.platform.models import Challenge, Device, LoginTransaction, User, utcnow

BINDING_PREFIX = "login:"


def binding_for(txn_id: str) -> str:
    """The challenge binding of a transaction."""
    return BINDING_PREFIX + txn_id


def txn_id_from_binding(binding: str) -> str | None:
    """The transaction id a binding names, or None for other bindings."""
    return binding[len(BINDING_PREFIX) :] if binding.startswith(BINDING_PREFIX) else None


def new_id() -> str:
    """A fresh transaction id: 128 random bits, base64url."""
    return secrets.token_urlsafe(16)


def create(session: Session, *, ttl_seconds: int, context: dict[str, Any] | None = None) -> str:
    """Start a transaction and return its id."""
    txn_id = new_id()
    session.add(
        LoginTransaction(
            id=txn_id,
            status="pending",
            context=context or {},
            expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        )
    )
    return txn_id


def answered_challenge(session: Session, txn_id: str) -> str | None:
    """The id of the challenge whose ``ok`` answer verified this transaction, if any."""
    return session.execute(
        select(Challenge.id)
        .where(Challenge.binding == binding_for(txn_id), Challenge.result == "ok")
        .order_by(Challenge.consumed_at)
        .limit(1)
    ).scalar_one_or_none()


def holder_secret(key: bytes | str, challenge_id: str) -> str:
    """The secret of the browser that fetched challenge ``challenge_id`` (HMAC under ``key``).

    The login page's ``/challenge`` response sets it as a cookie on the browser
    that fetched the challenge; ``/continue`` of a verified transaction requires
    the one of the challenge that was answered. Someone who planted their own
    session cookie in another browser never sees that response, so cannot
    continue a sign-in which that browser's device answered.
    """
    return _link_secret(key, b"login-holder:", challenge_id)


def claim_secret(key: bytes | str, txn_id: str) -> str:
    """The secret of the link that binds transaction ``txn_id`` to the browser that follows it.

    A sign-in started by a cross-site POST (the SAML HTTP-POST binding) cannot be
    added to the session cookie in that POST's answer: the browser sent no
    ``SameSite=Lax`` cookie with it, so the answer would replace the session (and
    every other sign-in it holds) with a new one. The answer redirects to
    ``/login/<txn>?claim=<this>`` instead, whose same-site GET carries the cookie.
    """
    return _link_secret(key, b"login-claim:", txn_id)


def _link_secret(key: bytes | str, label: bytes, value: str) -> str:
    """HMAC-SHA-256 of ``label + value`` under ``key``, as 128 bits of hex."""
    raw = key.encode() if isinstance(key, str) else key
    return hmac.new(raw, label + value.encode(), hashlib.sha256).hexdigest()[:32]


def verified_device(session: Session, txn_id: str) -> tuple[str, dt.datetime] | None:
    """The device that answered one of this transaction's challenges, and when."""
    row = session.execute(
        select(Challenge.device_id, Challenge.consumed_at)
        .where(Challenge.binding == binding_for(txn_id), Challenge.result == "ok")
        .limit(1)
    ).first()
    return (row.device_id, row.consumed_at) if row is not None else None


def settle(session: Session, txn: LoginTransaction) -> LoginTransaction:
    """Copy a verified answer onto a pending transaction (idempotent); return it."""
    if txn.status != "pending":
        return txn
    found = verified_device(session, txn.id)
    if found is None:
        return txn
    device_id, consumed_at = found
    user_id = session.execute(select(Device.user_id).where(Device.id == device_id)).scalar_one()
    session.execute(
        update(LoginTransaction)
        .where(LoginTransaction.id == txn.id, LoginTransaction.status == "pending")
        .values(status="verified", device_id=device_id, user_id=user_id, verified_at=consumed_at)
        .execution_options(synchronize_session=False)
    )
    settled = session.get(LoginTransaction, txn.id, populate_existing=True)
    return settled if settled is not None else txn


def mark_denied(
    session: Session, txn_id: str, *, code: str, device_id: str | None, user_id: str | None
) -> None:
    """Record why a transaction was refused (a device or posture decision, not bad input).

    A verified but not yet completed transaction can still be refused: a
    revocation or a blocking posture check between verification and completion wins.
    """
    denied = session.execute(
        update(LoginTransaction)
        .where(
            LoginTransaction.id == txn_id,
            LoginTransaction.status.in_(("pending", "verified")),
            LoginTransaction.completed_at.is_(None),
        )
        .values(status="denied", error_code=code, device_id=device_id, user_id=user_id)
        .execution_options(synchronize_session=False)
    )
    if denied.rowcount:  # type: ignore[attr-defined]
        metrics.signin("denied", code)


def is_open(txn: LoginTransaction | None, *, now: dt.datetime | None = None) -> bool:
    """True for a transaction that may still get a challenge (pending, not expired at ``now``)."""
    return txn is not None and txn.status == "pending" and txn.expires_at > (now or utcnow())


def same_user(subject: str, user: User) -> bool:
    """True when a broker's subject names ``user`` (userName or e-mail, under ``name_key``)."""
    wanted = name_key(subject.strip())
    return wanted in {name_key(user.user_name), name_key(user.email or "")}


def tofu_subject(txn: LoginTransaction) -> str | None:
    """The user an identity broker vouched for in a *signed* request, or None.

    This is the hook for TOFU registration in factor mode: when the device
    presented on the login page is unknown, the login page may bind it to this
    user instead of asking for an enrollment code, because the broker (Okta,
    Entra ID, ...) already authenticated the user and signed the claim.
    """
    context = txn.context or {}
    if context.get("kind") not in ("saml", "oidc"):  # oidc: a verified Entra id_token_hint
        return None
    return context.get("tofu_subject")
