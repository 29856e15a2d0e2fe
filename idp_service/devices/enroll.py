"""Enroll ceremony, service half: one-time enrollment codes and device registration.

The agent half is ``agent/enroll.py``. An administrator makes a code bound to a
user; the agent answers a ``register`` challenge with the code inside the box;
the service checks the code (once, atomically), binds the new device to the
code's user, and applies the registration policy (``registration_policy.py``;
TOFU by default: a user's first device is trusted, later ones wait for
approval; under ``trusted_device_approval`` a code goes to the user's trusted
devices, ``idp_service/devices/approve.py``).

In factor mode the login page may register a user's first device without a
code, on the strength of an identity broker's signed subject
(``idp_service/signin/login_enroll.py``); the same policy then applies. After an
upstream OpenID Connect sign-in (``idp_service/upstream/``) the page may register
any device of the user that sign-in proved, under the same policy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp_service.devices import approve, challenges, detection, registration_policy
from idp_service.devices.codes import CODE_ALPHABET, normalize_code
from idp_service.devices.registration_policy import Decision
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Forbidden, Invalid, ServiceError
from idp_service.platform.models import Device, EnrollmentCode, User, utcnow
from idp_service.services import Services
from idp_service.signin import login_enroll
from trust_protocol.errors import ProtocolError

CODE_GROUPS = 4
CODE_GROUP_LEN = 4


def hash_code(code: str) -> str:
    """The stored form of a code: SHA-256 hex of its normalized text."""
    return hashlib.sha256(normalize_code(code).encode()).hexdigest()


def new_code() -> str:
    """A random code of 16 symbols from a 32-letter alphabet (80 bits), in groups of 4."""
    symbols = [secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LEN)]
    groups = ["".join(symbols[i : i + CODE_GROUP_LEN]) for i in range(0, len(symbols), 4)]
    return "-".join(groups)


def create_code(
    session: Session, user: User, *, ttl_seconds: int, created_by: str | None = None
) -> tuple[str, EnrollmentCode]:
    """Store a new code for ``user`` and return it in the clear (shown once, never logged)."""
    code = new_code()
    row = EnrollmentCode(
        code_hash=hash_code(code),
        user_id=user.id,
        expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        "enroll_code.create",
        "ok",
        actor=created_by,
        user_id=user.id,
        details={"code_id": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return code, row


def _claim_code(session: Session, code: str, device_id: str) -> str:
    """Use the code once, atomically; return its user id or raise an ``enroll_code_*`` error."""
    digest = hash_code(code)
    now = utcnow()
    claimed = session.execute(
        update(EnrollmentCode)
        .where(
            EnrollmentCode.code_hash == digest,
            EnrollmentCode.used_at.is_(None),
            EnrollmentCode.expires_at > now,
        )
        .values(used_at=now, device_id=device_id)
        .returning(EnrollmentCode.user_id, EnrollmentCode.code_hash)
    ).first()
    if claimed is not None and hmac.compare_digest(claimed.code_hash, digest):
        owner: str = claimed.user_id
        return owner
    row = session.execute(
        select(EnrollmentCode.used_at).where(EnrollmentCode.code_hash == digest)
    ).first()
    if row is None:
        raise Forbidden("enroll_code_invalid", "This enrollment code is not valid.")
    if row.used_at is not None:
        raise Forbidden(
            "enroll_code_used",
            "This enrollment code was already used.",
            "Each code works once. Ask your administrator for a new one.",
        )
    raise Forbidden(
        "enroll_code_expired",
        "This enrollment code has expired.",
        "Ask your administrator for a new code: devicetrust enroll-code create.",
    )


@dataclass(frozen=True)
class Registration:
    """The outcome of a successful registration."""

    device_id: str
    state: str
    user_id: str
    user_name: str

    def to_json(self) -> dict[str, str]:
        """JSON body returned to the agent."""
        return {
            "device_id": self.device_id,
            "state": self.state,
            "user_id": self.user_id,
            "user": self.user_name,
        }


def initial_state(service: Services, session: Session, user_id: str) -> Decision:
    """Apply the registration policy that is most specific for ``user_id`` to a new device.

    See ``idp_service/devices/registration_policy.py``; the decision says which policy
    applied and from where (``env``, ``global`` or ``group:<id>``).
    """
    return registration_policy.decide(session, service.settings.registration_policy, user_id)


def register(service: Services, envelope: bytes, *, remote_addr: str | None = None) -> Registration:
    """Verify a ``register`` response and record the new device.

    The device is bound to the user of the enrollment code in the response, or,
    for a challenge the login page got bound ``tofu:<txn>``, to the user an
    identity broker vouched for in that sign-in (``login_enroll.broker_user``).
    The challenge is recorded first (:func:`challenges.accept_once`), so a replay
    is refused before the code is claimed. Raises :class:`ProtocolError` or
    :class:`ServiceError`; in that case nothing is written but an audit event.
    """
    method = "code"
    try:
        verified = challenges.open_answer(service, envelope, "register")
        code = verified.data.get("enrollment_code")
        tofu_txn = login_enroll.tofu_txn_id(verified.challenge.binding)
        upstream_txn = login_enroll.upstream_txn_id(verified.challenge.binding)
        if upstream_txn is not None:
            method = "upstream"
            if "enrollment_code" in verified.data:
                raise Invalid("malformed", "A registration without a code carries no code.")
        elif tofu_txn is not None:
            method = "broker"
            if "enrollment_code" in verified.data:
                raise Invalid("malformed", "A registration without a code carries no code.")
        elif not isinstance(code, str) or not 0 < len(code) <= 64:
            raise Invalid("enroll_code_invalid", "The response carries no enrollment code.")
        with service.db.session() as session:
            # Single use first (the order every ceremony shares): a replayed answer is
            # refused before the code is claimed or anything else is written. On SQLite
            # this write also serialises concurrent registrations, so the "no device yet"
            # check of a broker's sign-in cannot pass twice for one user.
            challenges.accept_once(session, verified, via="agent")
            if session.get(Device, verified.device_id) is not None:
                raise Conflict(
                    "device_exists",
                    "A device with this id is already registered.",
                    "This device is enrolled already; run devicetrust-agent status.",
                )
            details: dict[str, object] = {}
            if upstream_txn is not None:
                txn = login_enroll.open_transaction(session, upstream_txn)
                user = login_enroll.upstream_user(session, txn, lock=True)
                details["sp"] = (txn.context or {}).get("sp_entity_id")
            elif tofu_txn is not None:
                txn = login_enroll.open_transaction(session, tofu_txn)
                user = login_enroll.broker_user(session, txn, lock=True)
                details["sp"] = (txn.context or {}).get("sp_entity_id")
            else:
                if not isinstance(code, str):  # checked above; said again for the type
                    raise Invalid("enroll_code_invalid", "The response carries no enrollment code.")
                user_id = _claim_code(session, code, verified.device_id)
                owner = session.get(User, user_id)
                if owner is None or not owner.active:
                    raise ProtocolError("owner_inactive")
                user = owner
            decision = initial_state(service, session, user.id)
            # Hardware another device claims: flagged, and by policy suspended (detection.py).
            state, duplicate = detection.registration_state(
                session, service.settings, verified, decision.state
            )
            now = service.clock()
            session.add(
                Device(
                    id=verified.device_id,
                    user_id=user.id,
                    state=state,
                    state_reason=_state_reason(state, method),
                    sign_key=verified.sign_key,
                    box_key=verified.box_key,
                    hardware_uuid=verified.platform.get("hardware_uuid"),
                    serial=verified.platform.get("serial"),
                    hostname=verified.platform.get("hostname"),
                    platform=verified.platform.get("os"),
                    agent_version=verified.agent_version,
                    first_seen=now,
                    last_seen=now,
                    last_clock_skew=verified.clock_skew,
                    agent_instance=detection.instance_of(verified.platform),
                )
            )
            detection.record_registration(session, verified.device_id, duplicate, remote_addr)
            if method != "code":
                details["method"] = method
            details.update(decision.audit)
            if decision.needs_code and state == "pending":  # a suspended one waits for IT
                session.flush()
                new_device = session.get_one(Device, verified.device_id)  # just flushed
                details["approval_request"] = approve.open_request(service, session, new_device).id
            audit.record(
                session,
                "device.register",
                "ok",
                user_id=user.id,
                device_id=verified.device_id,
                remote_addr=remote_addr,
                details={
                    "state": state,
                    "clock_skew": round(verified.clock_skew, 3),
                    **details,
                },
            )
            return Registration(verified.device_id, state, user.id, user.user_name)
    except (ProtocolError, ServiceError) as exc:
        reason = getattr(exc, "reason", None)
        audit.record_separately(
            service.db,
            "device.register",
            "rejected",
            code=exc.code,
            remote_addr=remote_addr,
            details={"method": method, **({"reason": reason} if reason else {})}
            if method != "code"
            else None,
        )
        raise


def _state_reason(state: str, method: str) -> str:
    if state != "trusted":
        return "awaiting approval"  # by an admin, or a code from a trusted device (approve.py)
    if method == "broker":
        return "first device (TOFU, vouched for by the identity broker)"
    if method == "upstream":
        return "first device (TOFU, after an upstream sign-in)"
    return "first device (TOFU)"
