"""Authenticate ceremony, service half: judge a device's answer to a login challenge.

The agent half is ``agent/authenticate.py``. Responses arrive by two paths, the
browser's fetch (``via="browser"``) and the agent's direct POST to the callback
URL (``via="callback"``); whichever arrives first consumes the challenge and
verifies the login transaction, and the other gets ``challenge_replayed``.

This is the hot path of every sign-in: one read of the device and its owner,
then the conditional updates, in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select, update

from idp_service import audit, challenges, transactions
from idp_service.context import ServiceContext
from idp_service.storage.models import Device, User, utcnow
from trust_protocol.errors import ProtocolError
from trust_protocol.response import (
    RegisteredDevice,
    VerifiedResponse,
    check_binding,
    check_registration,
    open_response,
)

# Refusals that are decisions about a real device, recorded on the transaction so
# the login page can say why. Other refusals are bad input and change nothing.
DEVICE_DECISIONS = frozenset(
    {"device_pending", "device_denied", "device_revoked", "owner_inactive", "device_key_mismatch"}
)


@dataclass(frozen=True)
class Authentication:
    """A verified sign-in: which device, which owner, which transaction."""

    device_id: str
    user_id: str
    user_name: str
    txn_id: str | None
    clock_skew: float
    via: str


def verify(
    service: ServiceContext,
    envelope: bytes,
    *,
    via: str,
    expected_binding: str | None = None,
    remote_addr: str | None = None,
) -> Authentication:
    """Verify an ``authenticate`` response end to end, or raise :class:`ProtocolError`."""
    verified: VerifiedResponse | None = None
    device_user: tuple[str | None, str | None] = (None, None)
    try:
        verified = open_response(
            envelope,
            verify_key=service.keys.verify_key,
            box_key_for=service.keys.challenge_box_key,
            now=time.time(),
            purposes=("authenticate",),
            max_skew=service.settings.max_clock_skew,
        )
        if expected_binding is not None:
            check_binding(verified, expected_binding)
        txn_id = transactions.txn_id_from_binding(verified.challenge.binding)
        with service.db.session() as session:
            row = session.execute(
                select(Device.sign_key, Device.state, Device.user_id, User.active, User.user_name)
                .join(User, User.id == Device.user_id)
                .where(Device.id == verified.device_id)
            ).first()
            registered = None
            if row is not None:
                device_user = (verified.device_id, row.user_id)
                registered = RegisteredDevice(
                    verified.device_id, row.sign_key, row.state, bool(row.active)
                )
            check_registration(verified, registered)
            challenges.consume(session, verified.challenge, via=via, device_id=verified.device_id)
            now = utcnow()
            session.execute(
                update(Device)
                .where(Device.id == verified.device_id)
                .values(
                    last_seen=now,
                    last_clock_skew=verified.clock_skew,
                    agent_version=verified.agent_version,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if txn_id is not None and not transactions.mark_verified(
                session, txn_id, device_id=verified.device_id, user_id=row.user_id
            ):
                raise ProtocolError("challenge_expired", "the login transaction is no longer open")
            audit.record(
                session,
                "login.device_verified",
                "ok",
                user_id=row.user_id,
                device_id=verified.device_id,
                remote_addr=remote_addr,
                details={"via": via, "clock_skew": round(verified.clock_skew, 3)},
            )
            return Authentication(
                verified.device_id,
                row.user_id,
                row.user_name,
                txn_id,
                verified.clock_skew,
                via,
            )
    except ProtocolError as exc:
        _record_refusal(service, exc, verified, device_user, via, remote_addr)
        raise


def _record_refusal(
    service: ServiceContext,
    exc: ProtocolError,
    verified: VerifiedResponse | None,
    device_user: tuple[str | None, str | None],
    via: str,
    remote_addr: str | None,
) -> None:
    device_id, user_id = device_user
    with service.db.session() as session:
        if verified is not None and exc.code in DEVICE_DECISIONS:
            txn_id = transactions.txn_id_from_binding(verified.challenge.binding)
            if txn_id is not None:
                transactions.mark_denied(
                    session, txn_id, code=exc.code, device_id=device_id, user_id=user_id
                )
        audit.record(
            session,
            "login.device_verified",
            "denied" if exc.code in DEVICE_DECISIONS else "rejected",
            code=exc.code,
            user_id=user_id,
            device_id=device_id or (verified.device_id if verified else None),
            remote_addr=remote_addr,
            details={"via": via},
        )
