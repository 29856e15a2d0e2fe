"""Approve ceremony, service half: a trusted device vouches for a new one with a code.

The agent half is ``agent/approve.py``. Under ``trusted_device_approval``
(``idp_service/devices/registration_policy.py``) a later device of a user who already
has a trusted device registers as ``pending`` with an *approval request*:

* Each of the user's trusted devices gets its own random code (8 symbols from
  the enrollment-code alphabet), inside a notice signed by the server key and
  sealed to that device's registered box key (``trust_protocol/notice.py``).
  The service keeps the sealed notice and an HMAC-SHA256 of the code under a
  server secret; never the code.
* A trusted device fetches its notices with a signed poll
  (``trust_protocol/poll.py``, :func:`notices_for`); the agent shows the code.
* The person types the code on the new device's login page (:func:`submit`).
  A right code trusts the device (audited ``device.approve``, actor
  ``trusted-device:<id>``). A wrong one burns an attempt and replaces every
  code; when the attempts run out the request closes and the device waits for
  an admin. An expired code can be replaced (:func:`reissue`) without resetting
  the attempts.
* Any other change of the device's state closes the request
  (``idp_service/devices/states.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from idp_service.devices import queries as device_queries
from idp_service.devices import states
from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.devices.codes import CODE_ALPHABET, normalize_code
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Forbidden, Invalid, ServiceError
from idp_service.platform.keys import load_secret
from idp_service.platform.models import Device, utcnow
from idp_service.services import Services
from trust_protocol.encoding import b64e
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import Notice, seal_notice
from trust_protocol.poll import parse_poll, verify_poll

CODE_KEY = "approval.code_key"
CODE_LEN = 8
MAX_CODE_INPUT = 64


def new_code() -> str:
    """8 random symbols from the enrollment-code alphabet (40 bits), shown as ``ABCD-EFGH``."""
    symbols = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))
    return f"{symbols[:4]}-{symbols[4:]}"


def code_mac(key: bytes, code: str) -> str:
    """The stored form of a code: HMAC-SHA256 (hex) of its normalized text."""
    return hmac.new(key, normalize_code(code).encode(), hashlib.sha256).hexdigest()


def load_key(service: Services) -> bytes:
    """Load the code-hashing key once per process (at start: never inside a write)."""
    key = service.approval_code_key
    if key is None:
        key = service.approval_code_key = load_secret(service.db, CODE_KEY)
    return key


def _device_json(device: Device) -> dict[str, object]:
    def short(value: str | None) -> str | None:
        text = "".join(ch for ch in (value or "") if ch.isprintable())[:256]
        return text or None

    return {
        "hostname": short(device.hostname),
        "platform": short(device.platform),
        "serial": short(device.serial),
        "first_seen": int(device.first_seen.timestamp()),
    }


def _seal_codes(service: Services, session: Session, req: ApprovalRequest) -> int:
    """Replace the request's notices with fresh codes for each trusted device; return how many."""
    session.execute(delete(ApprovalNotice).where(ApprovalNotice.request_id == req.id))
    # An open request's device exists: approval_requests.device_id cascades on delete.
    new_device = session.get_one(Device, req.device_id)
    trusted = session.scalars(
        select(Device).where(
            Device.user_id == req.user_id, Device.state == "trusted", Device.id != req.device_id
        )
    ).all()
    issued_at = int(time.time())
    key = load_key(service)
    for device in trusted:
        code = new_code()
        notice = Notice(
            kind="approval",
            kid=service.keys.kid,
            id=req.id,
            to=device.id,
            issued_at=issued_at,
            expires_at=max(issued_at + 1, int(req.expires_at.timestamp())),
            code=code,
            device=_device_json(new_device),
        )
        sealed = seal_notice(notice, service.keys.signing_key, device.box_key)
        session.add(
            ApprovalNotice(
                request_id=req.id, device_id=device.id, code_mac=code_mac(key, code), sealed=sealed
            )
        )
    return len(trusted)


def open_request(service: Services, session: Session, device: Device) -> ApprovalRequest:
    """Open an approval request for a new pending ``device`` and seal its codes (audited)."""
    settings = service.settings
    req = ApprovalRequest(
        id=str(uuid.uuid4()),
        device_id=device.id,
        user_id=device.user_id,
        status="open",
        code_seq=1,
        attempts=0,
        max_attempts=settings.approval_attempts,
        expires_at=service.clock() + dt.timedelta(seconds=settings.approval_code_ttl),
    )
    session.add(req)
    session.flush()
    recipients = _seal_codes(service, session, req)
    audit.record(
        session,
        "approval.issue",
        "ok",
        user_id=device.user_id,
        device_id=device.id,
        details={
            "request_id": req.id,
            "recipients": recipients,
            "expires_at": req.expires_at.isoformat(),
            "max_attempts": req.max_attempts,
        },
    )
    return req


def open_for_device(session: Session, device_id: str) -> ApprovalRequest | None:
    """The device's open approval request, if any."""
    return device_queries.open_request(session, device_id)


def latest_requests(session: Session, device_ids: list[str]) -> dict[str, ApprovalRequest]:
    """The newest approval request of each of ``device_ids`` that has one.

    One query for a whole page of devices (``ix_approval_requests_device_status``
    leads with the device id); the console and the admin API show the result.
    """
    if not device_ids:
        return {}
    rows = session.scalars(
        select(ApprovalRequest)
        .where(ApprovalRequest.device_id.in_(device_ids))
        .order_by(ApprovalRequest.created_at, ApprovalRequest.id)
    )
    return {req.device_id: req for req in rows}  # a later request replaces an earlier one


REQUEST_STATUSES = ("open", "expired", "approved", "exhausted", "closed")


def request_view(req: ApprovalRequest, now: dt.datetime | None = None) -> dict[str, Any]:
    """What an admin may see of a request: status, times, attempts; there is no code to show.

    ``expired`` is an open request whose current code has expired (the user can ask
    for a new one on the login page).
    """
    expired = req.status == "open" and req.expires_at <= (now or utcnow())
    return {
        "id": req.id,
        "status": "expired" if expired else req.status,
        "attempts": req.attempts,
        "max_attempts": req.max_attempts,
        "created_at": req.created_at,
        "expires_at": req.expires_at,
        "closed_at": req.closed_at,
    }


def request_json(req: ApprovalRequest, now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`request_view` with ISO 8601 times, as the admin API shows it."""
    view = request_view(req, now)
    for key in ("created_at", "expires_at", "closed_at"):
        view[key] = view[key].isoformat() if view[key] is not None else None
    return view


# -- delivery: the trusted device's signed poll -----------------------------------------------


def notices_for(service: Services, body: bytes, *, remote_addr: str | None) -> list[str]:
    """The sealed notices (base64url) for the device that signed the poll.

    Refused: a malformed poll (400), an unknown device (403 ``device_unknown``),
    a bad signature (403 ``bad_poll_signature``), a stale poll (403
    ``poll_expired``) and a device that is not trusted (403 ``device_not_trusted``).
    Only notices of open, unexpired requests are returned.
    """
    try:
        poll = parse_poll(body)
        with service.db.session() as session:
            device = session.get(Device, poll.device_id)
            if device is None:
                raise ProtocolError("device_unknown")
            verify_poll(
                poll, device.sign_key, now=time.time(), window=service.settings.approval_poll_skew
            )
            if device.state != "trusted":
                raise Forbidden(
                    "device_not_trusted", "Only trusted devices receive approval notices."
                )
            rows = session.scalars(
                select(ApprovalNotice.sealed)
                .join(ApprovalRequest, ApprovalRequest.id == ApprovalNotice.request_id)
                .where(
                    ApprovalNotice.device_id == device.id,
                    ApprovalRequest.status == "open",
                    ApprovalRequest.expires_at > service.clock(),
                )
                .order_by(ApprovalNotice.id)
            ).all()
            return [b64e(bytes(s)) for s in rows]
    except (ProtocolError, ServiceError) as exc:
        audit.record_separately(
            service.db, "approval.poll", "rejected", code=exc.code, remote_addr=remote_addr
        )
        raise


# -- the new device's login page ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """After a code: ``approved``, ``wrong``, ``exhausted`` or ``expired``, and attempts left."""

    result: str
    attempts_left: int = 0


def _locked_request(session: Session, device_id: str) -> ApprovalRequest:
    req = device_queries.open_request(session, device_id, lock=True)
    if req is None:
        raise Conflict(
            "approval_closed",
            "This device has no open approval request.",
            "Check again, or ask IT to approve this device.",
        )
    return req


def submit(
    service: Services, device_id: str, code: str, *, remote_addr: str | None = None
) -> Outcome:
    """Check a code typed on the new device's login page (each outcome audited, never the code)."""
    if not isinstance(code, str) or not 0 < len(code) <= MAX_CODE_INPUT:
        raise Invalid("code_required", "Enter the code shown on your other device.")
    typed = normalize_code(code)
    with service.db.session() as session:
        req = _locked_request(session, device_id)
        base = {"user_id": req.user_id, "device_id": device_id, "remote_addr": remote_addr}
        if req.expires_at <= service.clock():
            audit.record(
                session,
                "approval.code",
                "rejected",
                code="approval_expired",
                **base,
                details={"request_id": req.id},
            )
            return Outcome("expired", req.max_attempts - req.attempts)
        # Claim an attempt atomically first: concurrent guesses cannot exceed the limit.
        claimed = session.execute(
            update(ApprovalRequest)
            .where(
                ApprovalRequest.id == req.id,
                ApprovalRequest.status == "open",
                ApprovalRequest.attempts < ApprovalRequest.max_attempts,
            )
            .values(attempts=ApprovalRequest.attempts + 1)
            .returning(ApprovalRequest.attempts)
            .execution_options(synchronize_session=False)
        ).first()
        if claimed is None:
            raise Conflict("approval_closed", "This approval request is closed.")
        attempts = claimed.attempts
        req.attempts = attempts
        digest = code_mac(load_key(service), typed)
        voucher = None
        for notice_device, mac in session.execute(
            select(ApprovalNotice.device_id, ApprovalNotice.code_mac).where(
                ApprovalNotice.request_id == req.id
            )
        ).all():
            if hmac.compare_digest(mac, digest) and voucher is None:
                voucher = notice_device
        if voucher is not None and _still_trusted(session, voucher, req.user_id):
            return _approve(session, req, voucher, base)
        left = req.max_attempts - attempts
        if left <= 0:
            device_queries.close_request(session, req, "exhausted", "too many wrong codes")
            audit.record(
                session,
                "approval.code",
                "rejected",
                code="approval_exhausted",
                **base,
                details={"request_id": req.id, "attempts": attempts},
            )
            return Outcome("exhausted", 0)
        req.code_seq += 1
        req.expires_at = service.clock() + dt.timedelta(seconds=service.settings.approval_code_ttl)
        session.flush()
        recipients = _seal_codes(service, session, req)
        audit.record(
            session,
            "approval.code",
            "rejected",
            code="approval_code_wrong",
            **base,
            details={"request_id": req.id, "attempts_left": left, "recipients": recipients},
        )
        return Outcome("wrong", left)


def _still_trusted(session: Session, device_id: str, user_id: str) -> bool:
    device = session.get(Device, device_id)
    return device is not None and device.state == "trusted" and device.user_id == user_id


def _approve(session: Session, req: ApprovalRequest, voucher: str, base: dict[str, Any]) -> Outcome:
    device = session.get(Device, req.device_id)
    if device is None:
        raise states.transition("approve_code").refuse("deleted")
    states.move(
        session,
        device,
        "approve_code",  # closes this request as approved
        reason=f"approved with a code from trusted device {voucher}",
        actor=f"trusted-device:{voucher}",
        request_reason="trusted device code",
        remote_addr=base["remote_addr"],
        details={"method": "trusted_device_code", "request_id": req.id, "attempts": req.attempts},
    )
    return Outcome("approved", req.max_attempts - req.attempts)


def reissue(service: Services, device_id: str, *, remote_addr: str | None = None) -> int:
    """Send new codes for an expired request (attempts are kept); return the attempts left."""
    with service.db.session() as session:
        req = _locked_request(session, device_id)
        if req.expires_at > service.clock():
            raise Conflict(
                "approval_not_expired",
                "The current code is still valid: enter the code shown on your other device.",
            )
        req.code_seq += 1
        req.expires_at = service.clock() + dt.timedelta(seconds=service.settings.approval_code_ttl)
        session.flush()
        recipients = _seal_codes(service, session, req)
        audit.record(
            session,
            "approval.reissue",
            "ok",
            user_id=req.user_id,
            device_id=device_id,
            remote_addr=remote_addr,
            details={"request_id": req.id, "recipients": recipients},
        )
        return req.max_attempts - req.attempts
