"""Authenticate ceremony, service half: judge a device's answer to a login challenge.

The agent half is ``agent/authenticate.py``. Responses arrive by two paths, the
browser's fetch (``via="browser"``) and the agent's direct POST to the callback
URL (``via="callback"``); whichever arrives first consumes the challenge, and
the other gets ``challenge_replayed``. A login transaction counts as verified
once one of its challenges was consumed with result ``ok``.

This is the hot path of every sign-in. After the pure protocol checks
(:func:`trust_protocol.response.open_response`), a successful answer costs one
guarded write (``signin/store.py``), which also marks the login
transaction verified and says where it stands. Only a refused answer pays for
the reads that say *why* it was refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.devices import challenges, detection
from idp_service.devices.challenges import timestamp
from idp_service.platform import audit, metrics
from idp_service.platform.models import Challenge as ChallengeRow
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.signin.store import Consumed, Guards, consume_for_trusted_device
from idp_service.upstream import reauth
from trust_protocol.errors import ProtocolError
from trust_protocol.response import (
    RegisteredDevice,
    VerifiedResponse,
    check_binding,
    check_registration,
)

# Refusals that are decisions about a real device, recorded on the transaction so
# the login page can say why. Other refusals are bad input and change nothing.
DEVICE_DECISIONS = frozenset(
    {
        "device_pending",
        "device_denied",
        "device_revoked",
        "device_suspended",
        "owner_inactive",
        "device_key_mismatch",
    }
)


@dataclass(frozen=True)
class Authentication:
    """A verified sign-in: which device, which owner, which transaction and its state now."""

    device_id: str
    user_id: str
    txn_id: str | None
    clock_skew: float
    via: str
    txn_status: str | None = None  # verified, or denied/pending if it was settled otherwise
    txn_error: str | None = None
    reauth_grant: bytes | None = None  # the successor token, sealed to the device (§17)


def _verify(
    service: Services,
    envelope: bytes,
    *,
    via: str,
    expected_binding: str | None = None,
    remote_addr: str | None = None,
) -> Authentication:
    """Verify an ``authenticate`` response end to end, or raise :class:`ProtocolError`."""
    verified: VerifiedResponse | None = None
    try:
        verified = challenges.open_answer(service, envelope, "authenticate")
        if expected_binding is not None:
            check_binding(verified, expected_binding)
        txn_id = transactions.txn_id_from_binding(verified.challenge.binding)
        grant = None
        if txn_id is not None:
            # Re-authentication tokens (idp_service/upstream/reauth.py): decided before the
            # challenge is consumed, so no sign-in is verified before this step said yes.
            step = reauth.on_verified_answer(
                service,
                device_id=verified.device_id,
                sign_key=verified.sign_key,
                box_key=verified.box_key,
                txn_id=txn_id,
                challenge_id=verified.challenge.id_text,
                data=verified.data,
                remote_addr=remote_addr,
            )
            grant = step.grant
            if step.refusal is not None:
                with service.db.session() as session:
                    transactions.mark_denied(
                        session,
                        txn_id,
                        code=step.refusal,
                        device_id=verified.device_id,
                        user_id=step.user_id,
                    )
                return Authentication(
                    verified.device_id,
                    step.user_id or "",
                    txn_id,
                    verified.clock_skew,
                    via,
                    "denied",
                    step.refusal,
                )
        answer = verified
        checked = _guards(service, verified)

        def consume(user_id: str) -> Consumed | None:
            return consume_for_trusted_device(
                service.db.engine,
                challenge_id=answer.challenge.id_text,
                binding=answer.challenge.binding,
                issued_at=timestamp(answer.challenge.issued_at),
                expires_at=timestamp(answer.challenge.expires_at),
                device_id=answer.device_id,
                user_id=user_id,
                sign_key=answer.sign_key,
                via=via,
                clock_skew=answer.clock_skew,
                agent_version=answer.agent_version,
                remote_addr=remote_addr,
                details={"via": via, "clock_skew": round(answer.clock_skew, 3)},
                txn_id=txn_id,
                guards=checked,
            )

        owners = service.device_owners
        remembered = owners.remembered(verified.device_id)
        owner = remembered or owners.read(verified.device_id)
        consumed = consume(owner) if owner is not None else None
        if consumed is None and remembered is not None:
            # Refused: perhaps the owner we remembered is no longer the device's. Look again.
            fresh = owners.read(verified.device_id)
            if fresh is not None and fresh != remembered:
                consumed = consume(fresh)
        if consumed is None:
            consumed = _explain_refusal(service, verified, via, remote_addr)
        if consumed.txn_status == "verified":
            metrics.signin("verified")  # once: the answer that verified the sign-in
        return Authentication(
            verified.device_id,
            consumed.user_id,
            txn_id,
            verified.clock_skew,
            via,
            consumed.txn_status,
            consumed.txn_error,
            grant,
        )
    except ProtocolError as exc:
        _record_refusal(service, exc, verified, via, remote_addr)
        raise


# Timed and counted (metrics.verify_path). Wrapped here rather than with a decorator: the
# mutation tests (docs/testing.md) do not mutate a decorated function's body.
verify = metrics.verify_path(_verify)


def _guards(service: Services, verified: VerifiedResponse) -> Guards:
    """Detection's cheap checks for the guarded write (any failure takes the slow path)."""
    settings = service.settings
    now = service.clock()
    instance = detection.instance_of(verified.platform)
    return Guards(
        hardware_uuid=verified.platform.get("hardware_uuid") or None,
        serial=verified.platform.get("serial") or None,
        stale_before=now - dt.timedelta(seconds=settings.stale_after),
        instance=instance,
        alternating=instance,
        window_start=now - dt.timedelta(seconds=settings.concurrent_window),
    )


def _explain_refusal(
    service: Services,
    verified: VerifiedResponse,
    via: str,
    remote_addr: str | None,
) -> Consumed:
    """The guarded write refused: find out why and raise the matching code.

    A trusted device that detection finds something wrong with is flagged (and by
    policy suspended or denied, committed before refusing). When the policy is only
    to flag, the answer is recorded here, in the same transaction.
    """
    with service.db.session() as session:
        # Reads only, in the shared order (single use, registry, detection), to say why.
        if session.get(ChallengeRow, verified.challenge.id_text) is not None:
            raise ProtocolError("challenge_replayed")
        found = session.execute(
            select(Device, User.active)
            .join(User, User.id == Device.user_id)
            .where(Device.id == verified.device_id)
        ).first()
        device = found[0] if found is not None else None
        registered = (
            RegisteredDevice(verified.device_id, found[0].sign_key, found[0].state, bool(found[1]))
            if found is not None
            else None
        )
        check_registration(verified, registered)  # refuses an unknown device
        now = service.clock()
        if device is not None and detection.judge_answer(
            device, verified.platform, now, service.settings
        ):
            return _judge_detected(service, session, verified, device, via, remote_addr, now)
    # Everything looks fine a moment later: a concurrent change (say, a re-trust
    # right after a revocation) raced this answer. Refuse; a new sign-in will work.
    raise ProtocolError("device_revoked", "the device's state changed during this sign-in")


def _judge_detected(
    service: Services,
    session: Session,
    verified: VerifiedResponse,
    device: Device,
    via: str,
    remote_addr: str | None,
    now: dt.datetime,
) -> Consumed:
    """Detection found something: judge the answer in the order every ceremony shares.

    :func:`challenges.accept_once` records the challenge first, which also
    serialises this answer with its other copy (browser and callback): the copy
    that comes second finds it answered (``challenge_replayed``) before anything
    is written. Then the device is locked and judged again on what it is now.
    """
    findings: list[detection.Finding] = []

    def registry() -> RegisteredDevice:
        # A no-op update takes the row lock (PostgreSQL) or the write lock (SQLite)
        # until this transaction ends; then look again.
        session.execute(update(Device).where(Device.id == device.id).values(state=Device.state))
        session.refresh(device)
        active = session.execute(select(User.active).where(User.id == device.user_id)).scalar()
        return RegisteredDevice(device.id, device.sign_key, device.state, bool(active))

    def judge() -> ProtocolError | None:
        findings.extend(detection.judge_answer(device, verified.platform, now, service.settings))
        if not findings:
            # Everything looks fine a moment later: a concurrent change (say, a re-trust
            # right after a revocation) raced this answer. Refuse; a new sign-in will work.
            raise ProtocolError("device_revoked", "the device's state changed during this sign-in")
        context = detection.answer_context(via, remote_addr, now)
        refusal = detection.apply(session, device, findings, service.settings, context=context)
        if refusal is None:
            return None
        return ProtocolError(refusal, "; ".join(f.kind for f in findings))

    challenges.accept_once(session, verified, via=via, registry=registry, judge=judge)
    # Policy "flag": the device stays trusted, and the answer is recorded in this same
    # (locked) transaction.
    return _record_flagged(session, verified, device, via, remote_addr, now, findings)


def _record_flagged(
    session: Session,
    verified: VerifiedResponse,
    device: Device,
    via: str,
    remote_addr: str | None,
    now: dt.datetime,
    findings: list[detection.Finding],
) -> Consumed:
    """The slow path's version of the guarded write, for a device flagged but left trusted
    (the challenge is already recorded, by :func:`challenges.accept_once`)."""
    device.last_seen = now
    device.last_clock_skew = verified.clock_skew
    device.agent_version = verified.agent_version
    device.agent_instance, device.agent_instance_prev, device.agent_instance_at = (
        detection.next_instances(
            device.agent_instance,
            device.agent_instance_prev,
            device.agent_instance_at,
            detection.instance_of(verified.platform),
            now,
        )
    )
    audit.record(
        session,
        "login.device_verified",
        "ok",
        user_id=device.user_id,
        device_id=device.id,
        remote_addr=remote_addr,
        details={
            "via": via,
            "clock_skew": round(verified.clock_skew, 3),
            "flagged": [f.kind for f in findings],
        },
    )
    txn_id = transactions.txn_id_from_binding(verified.challenge.binding)
    txn = session.get(LoginTransaction, txn_id) if txn_id is not None else None
    if txn is None:
        return Consumed(device.user_id, None, None)
    session.flush()
    txn = transactions.settle(session, txn)
    return Consumed(device.user_id, txn.status, txn.error_code)


def _record_refusal(
    service: Services,
    exc: ProtocolError,
    verified: VerifiedResponse | None,
    via: str,
    remote_addr: str | None,
) -> None:
    device_id = verified.device_id if verified is not None else None
    with service.db.session() as session:
        user_id = None
        if device_id is not None:
            user_id = session.execute(
                select(Device.user_id).where(Device.id == device_id)
            ).scalar_one_or_none()
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
            device_id=device_id,
            remote_addr=remote_addr,
            details={"via": via},
        )
