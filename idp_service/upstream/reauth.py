"""Re-authentication tokens and the re-verification window: the service half (§17).

Within the window an administrator sets (globally or per SCIM group, the most
specific wins), a trusted device signs in with a single-use token instead of an
upstream round trip. The token travels inside the signed ``data`` of the
``authenticate`` answer; :func:`on_verified_answer` runs after the challenge was
consumed (single use first) and:

* **spends** a presented token and seals its successor to the device, delivered
  in the same exchange (:attr:`Outcome.grant`, also kept for pick-up by the
  challenge id, ``GET /agent/v1/reauth/<challenge>``);
* **refuses a copy**: a token presented after it was spent is a copy; the whole
  family is revoked, the event audited (``reauth.reuse``, a webhook event) and
  the sign-in denied ``reauth_reused``;
* **recovers a lost reply**: the immediate predecessor of a successor that was
  never used is accepted once more, within :data:`GRACE` seconds of its use, from
  the same device key (the stored hash binds it); that successor is revoked and a
  new one issued. A second such use, or any later use of the replaced successor,
  is a copy;
* **starts a family** after an upstream sign-in in this sign-in that proved the
  device's owner, revoking the device's older tokens;
* under a policy with ``required``, **denies** ``reverify_required`` a sign-in
  with neither a good token nor an upstream sign-in.

Under a policy with ``second_device``, a user's second or later device is not
approved with a trusted device's code until an upstream sign-in in the same
sign-in proved its owner (:func:`approval_gate`, refused ``upstream_required``).

Tokens are revoked when the device leaves ``trusted`` or is deleted, when SCIM
deactivates the owner, and on an administrator's re-verify (:func:`revoke_device`,
:func:`revoke_user`).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from idp_service.directory.tables import Group
from idp_service.platform import audit
from idp_service.platform.errors import Forbidden, Invalid, NotFound
from idp_service.platform.identity import name_key
from idp_service.platform.models import Device, utcnow
from idp_service.services import Services
from idp_service.upstream import store
from idp_service.upstream.tables import ReauthPolicy, ReauthToken, ReverifyMark
from trust_protocol import durations
from trust_protocol.errors import ProtocolError
from trust_protocol.reauth import Grant, new_token, presented, seal_grant, token_hash

GRACE = 300  # seconds after a token's use in which its immediate predecessor may recover, once
GLOBAL_SCOPE = "global"
REUSED = "reauth_reused"
REVERIFY = "reverify_required"
UPSTREAM_REQUIRED = "upstream_required"
_POLICY_CACHE_TTL = 5.0


@dataclass(frozen=True)
class Policy:
    """The re-verification window that applies to a user, and where it comes from."""

    lifetime: int
    required: bool
    source: str
    second_device: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the token step decided: a grant for the device, a refusal code, or nothing."""

    grant: bytes | None = None
    refusal: str | None = None
    user_id: str | None = None


class _AnyPolicy:
    """Whether any policy row exists, cached a few seconds: the common case costs nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._value = False

    def cached(self) -> bool | None:
        """The cached answer while it is fresh, else None (no database work)."""
        with self._lock:
            if time.monotonic() - self._at < _POLICY_CACHE_TTL:
                return self._value
        return None

    def get(self, session: Session) -> bool:
        fresh = self.cached()
        if fresh is not None:
            return fresh
        value = (
            session.execute(select(ReauthPolicy.scope).limit(1)).first() is not None
            or session.execute(select(ReverifyMark.device_id).limit(1)).first() is not None
        )
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return value

    def forget(self) -> None:
        with self._lock:
            self._at = float("-inf")


ANY_POLICY = _AnyPolicy()


def _group_depths(session: Session, user_id: str) -> dict[str, int]:
    from idp_service.directory.tables import GroupMember

    depths: dict[str, int] = {}
    frontier = [user_id]
    for depth in range(1, 33):
        if not frontier:
            break
        found = session.scalars(
            select(GroupMember.group_id).where(GroupMember.value.in_(frontier)).distinct()
        ).all()
        frontier = [g for g in found if g not in depths]
        for g in frontier:
            depths[g] = depth
    return depths


def policy_for(session: Session, user_id: str) -> Policy | None:
    """The most specific window for ``user_id``: a direct group's beats a nested one's beats
    the global one; ties at one depth go to the shortest lifetime. None: no window."""
    depths = _group_depths(session, user_id)
    best: tuple[int, int, str] | None = None
    chosen: ReauthPolicy | None = None
    if depths:
        for row in session.scalars(
            select(ReauthPolicy).where(ReauthPolicy.group_id.in_(list(depths)))
        ).all():
            key = (depths[row.group_id or ""], row.lifetime, row.scope)
            if best is None or key < best:
                best, chosen = key, row
    if chosen is None:
        chosen = session.get(ReauthPolicy, GLOBAL_SCOPE)
    if chosen is None:
        return None
    return Policy(chosen.lifetime, chosen.required, chosen.scope, chosen.second_device)


# -- the token step of a sign-in ----------------------------------------------------------


def _issue(
    service: Services,
    session: Session,
    *,
    device_id: str,
    box_key: bytes,
    user_id: str,
    challenge_id: str,
    family: str,
    expires_at: dt.datetime,
    sign_key: bytes,
    predecessor: str | None,
) -> bytes:
    token = new_token()
    now = utcnow()
    grant = Grant(
        kid=service.keys.kid,
        to=device_id,
        challenge=challenge_id,
        family=family,
        token=token,
        issued_at=int(now.timestamp()),
        expires_at=int(expires_at.timestamp()),
    )
    sealed = seal_grant(grant, service.keys.signing_key, box_key)
    session.add(
        ReauthToken(
            id=secrets.token_hex(16),
            family=family,
            device_id=device_id,
            user_id=user_id,
            token_hash=token_hash(token, device_id, sign_key),
            predecessor=predecessor,
            issued_at=now,
            expires_at=expires_at,
            issued_in=challenge_id,
            sealed=sealed,
        )
    )
    return sealed


def _revoke(session: Session, reason: str, *conditions: Any) -> int:
    result = session.execute(
        update(ReauthToken)
        .where(ReauthToken.revoked_at.is_(None), *conditions)
        .values(revoked_at=utcnow(), revoked_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def on_verified_answer(
    service: Services,
    *,
    device_id: str,
    sign_key: bytes,
    box_key: bytes,
    txn_id: str,
    challenge_id: str,
    data: dict[str, Any],
    remote_addr: str | None = None,
) -> Outcome:
    """The token step of a sign-in whose answer verified (see the module's docstring).

    It runs *before* the challenge is consumed, so that no sign-in is ever marked
    verified before this step said yes; it is idempotent per challenge (the
    browser's and the agent's copies of one answer both run it: the second finds
    the grant the first issued in this challenge and returns it). A device that
    is not trusted, or whose registered key is another, is left to the sign-in's
    own checks.
    """
    try:
        token = presented(data)
    except ProtocolError:
        token = None  # a malformed token counts as none; the answer itself was verified
    if token is None and ANY_POLICY.cached() is False:
        return Outcome()  # the hot path when no window is set: no database work at all
    with service.db.session() as session:
        if token is None and not ANY_POLICY.get(session):
            return Outcome()
        device = session.get(Device, device_id)
        if device is None or device.state != "trusted" or device.sign_key != sign_key:
            return Outcome()
        user_id = device.user_id
        same = session.execute(
            select(ReauthToken.sealed).where(
                ReauthToken.issued_in == challenge_id, ReauthToken.device_id == device_id
            )
        ).scalar_one_or_none()
        if same is not None:  # the other copy of this same answer
            return Outcome(grant=same, user_id=user_id)
        policy = policy_for(session, user_id)
        marked = session.get(ReverifyMark, device_id) is not None
        if policy is None and not marked:
            return Outcome()
        if policy is None:  # re-verify without a window: one upstream sign-in, no tokens after
            policy = Policy(0, True, "reverify")
        now = utcnow()
        details: dict[str, Any] = {"policy": policy.source, "reverify_mark": marked}
        if token is not None and not marked:
            row = session.execute(
                select(ReauthToken)
                .where(ReauthToken.token_hash == token_hash(token, device_id, sign_key))
                .with_for_update()
            ).scalar_one_or_none()
            if row is not None and row.device_id == device_id and row.user_id == user_id:
                verdict = _spend(service, session, row, box_key, sign_key, challenge_id, now)
                if verdict.refusal == REUSED:
                    _revoke(session, "reuse", ReauthToken.family == row.family)
                    audit.record(
                        session,
                        "reauth.reuse",
                        "ok",
                        user_id=user_id,
                        device_id=device_id,
                        remote_addr=remote_addr,
                        details={"family": row.family, "txn": txn_id, "suspicious": True},
                    )
                    return Outcome(refusal=REUSED, user_id=user_id)
                if verdict.grant is not None:
                    return Outcome(grant=verdict.grant, user_id=user_id)
                details["token_check"] = verdict.refusal or "invalid"
            else:
                details["token_check"] = "not_found"  # noqa: S105 - an outcome
        proved = (
            store.verified_user(session, txn_id, "enroll")
            or store.verified_user(session, txn_id, "reverify")
            or store.verified_user(session, txn_id, "approve")
        )
        if proved is not None and proved.id == user_id:
            if marked:
                session.execute(delete(ReverifyMark).where(ReverifyMark.device_id == device_id))
            if policy.lifetime <= 0:
                audit.record(
                    session,
                    "reauth.reverified",
                    "ok",
                    user_id=user_id,
                    device_id=device_id,
                    remote_addr=remote_addr,
                    details=details,
                )
                return Outcome()
            family = secrets.token_hex(16)
            superseded = _revoke(session, "superseded", ReauthToken.device_id == device_id)
            sealed = _issue(
                service,
                session,
                device_id=device_id,
                box_key=box_key,
                user_id=user_id,
                challenge_id=challenge_id,
                family=family,
                expires_at=now + dt.timedelta(seconds=policy.lifetime),
                sign_key=sign_key,
                predecessor=None,
            )
            audit.record(
                session,
                "reauth.issue",
                "ok",
                user_id=user_id,
                device_id=device_id,
                remote_addr=remote_addr,
                details={**details, "family": family, "superseded": superseded},
            )
            return Outcome(grant=sealed, user_id=user_id)
        if policy.required or marked:
            audit.record(
                session,
                "reauth.required",
                "denied",
                code=REVERIFY,
                user_id=user_id,
                device_id=device_id,
                remote_addr=remote_addr,
                details=details,
            )
            return Outcome(refusal=REVERIFY, user_id=user_id)
        return Outcome()


def _spend(
    service: Services,
    session: Session,
    row: ReauthToken,
    box_key: bytes,
    sign_key: bytes,
    challenge_id: str,
    now: dt.datetime,
) -> Outcome:
    """Spend ``row`` (locked) and issue its successor; or say why not."""
    if row.revoked_at is not None:
        # A successor replaced by a lost-reply recovery was in someone's hands: a copy.
        return Outcome(refusal=REUSED if row.revoked_reason == "grace" else "revoked")
    if row.expires_at <= now:
        return Outcome(refusal="expired")
    if row.used_at is None:
        row.used_at, row.used_in = now, challenge_id
    else:
        successor = session.execute(
            select(ReauthToken)
            .where(ReauthToken.predecessor == row.id)
            .order_by(ReauthToken.issued_at.desc())
            .limit(1)
            .with_for_update()
        ).scalar_one_or_none()
        recoverable = (
            row.grace_used_at is None
            and now - row.used_at <= dt.timedelta(seconds=GRACE)
            and successor is not None
            and successor.used_at is None
            and successor.revoked_at is None
        )
        if not recoverable or successor is None:
            return Outcome(refusal=REUSED)
        row.grace_used_at = now
        successor.revoked_at, successor.revoked_reason = now, "grace"
        audit.record(
            session,
            "reauth.recover",
            "ok",
            user_id=row.user_id,
            device_id=row.device_id,
            details={"family": row.family},
        )
    sealed = _issue(
        service,
        session,
        device_id=row.device_id,
        box_key=box_key,
        user_id=row.user_id,
        challenge_id=challenge_id,
        family=row.family,
        expires_at=row.expires_at,
        sign_key=sign_key,
        predecessor=row.id,
    )
    return Outcome(grant=sealed)


def pickup(service: Services, challenge_id: str) -> bytes | None:
    """The grant sealed in the sign-in of ``challenge_id``, if one is live (only its device
    can open it)."""
    if not 0 < len(challenge_id) <= 64:
        return None
    with service.db.read_session() as session:
        return session.execute(
            select(ReauthToken.sealed).where(
                ReauthToken.issued_in == challenge_id,
                ReauthToken.revoked_at.is_(None),
                ReauthToken.used_at.is_(None),
            )
        ).scalar_one_or_none()


# -- revocation ---------------------------------------------------------------------------


def revoke_device(session: Session, device_id: str, reason: str) -> int:
    """Revoke every live token of a device (it left trusted, was deleted, or re-verify)."""
    return _revoke(session, reason[:32], ReauthToken.device_id == device_id)


def revoke_user(session: Session, user_id: str, reason: str) -> int:
    """Revoke every live token of a user's devices (deactivated, or re-verify)."""
    return _revoke(session, reason[:32], ReauthToken.user_id == user_id)


def live_tokens(session: Session, device_id: str) -> int:
    """How many unspent, unrevoked tokens a device holds (for views and tests)."""
    return int(
        session.execute(
            select(func.count())
            .select_from(ReauthToken)
            .where(
                ReauthToken.device_id == device_id,
                ReauthToken.revoked_at.is_(None),
                ReauthToken.used_at.is_(None),
            )
        ).scalar_one()
    )


def reverify(
    session: Session,
    *,
    device_ids: list[str],
    actor: str,
    user_id: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """An administrator's re-verify: revoke the devices' tokens and require an upstream
    sign-in at each one's next sign-in (audited)."""
    now = utcnow()
    revoked = 0
    for device_id in device_ids:
        revoked += revoke_device(session, device_id, "reverify")
        mark = session.get(ReverifyMark, device_id)
        if mark is None:
            session.add(ReverifyMark(device_id=device_id, requested_at=now, requested_by=actor))
        else:
            mark.requested_at, mark.requested_by = now, actor
    audit.record(
        session,
        "reauth.reverify",
        "ok",
        actor=actor,
        user_id=user_id,
        device_id=device_ids[0] if len(device_ids) == 1 else None,
        details={"devices": device_ids, "tokens_revoked": revoked, "reason": reason},
    )
    ANY_POLICY.forget()
    return {"devices": device_ids, "tokens_revoked": revoked}


def reverify_target(session: Session, *, user: str | None, device: str | None) -> dict[str, Any]:
    """Re-verify one device (by id) or every device of one user (by userName or id)."""
    from idp_service.directory import users
    from idp_service.platform.models import Device, User

    if device:
        found = session.get(Device, device)
        if found is None:
            raise NotFound("device_not_found", f"no device {device!r}")
        return {"user_id": found.user_id, "device_ids": [found.id]}
    person = users.find(session, user or "") or session.get(User, user or "")
    if person is None:
        raise NotFound("user_not_found", f"no user {user!r}")
    ids = list(session.scalars(select(Device.id).where(Device.user_id == person.id)).all())
    return {"user_id": person.id, "device_ids": ids}


# -- the window, as administrators set it ------------------------------------------------


def _lifetime(text: str) -> int:
    try:
        seconds = int(durations.parse_duration(text[:64]).total_seconds())
    except (ValueError, OverflowError, TypeError):
        seconds = 0
    if not 60 <= seconds <= 366 * 86400:
        raise Invalid(
            "bad_lifetime", "The lifetime must be a duration from 1m to 366d, like 30d or 12h."
        )
    return seconds


def _find_group(session: Session, group: str) -> Group:
    found = None
    if 0 < len(group) <= 256:
        found = (
            session.get(Group, group)
            or session.scalars(
                select(Group).where(Group.display_name_key == name_key(group)).limit(1)
            ).first()
        )
    if found is None:
        raise NotFound("group_not_found", f"no SCIM group {group[:80]!r} (by id or displayName)")
    return found


def _view(row: ReauthPolicy, group_name: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "scope": row.scope,
        "lifetime": durations.format_duration(row.lifetime),
        "lifetime_seconds": row.lifetime,
        "required": bool(row.required),
        "second_device": bool(row.second_device),
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        "updated_by": row.updated_by,
    }
    if row.group_id is not None:
        view.update(group_id=row.group_id, group=group_name or row.group_id)
    return view


def policy_listing(session: Session) -> dict[str, Any]:
    """The global window (or None) and every group's, as the console and the API show them."""
    rows = session.scalars(select(ReauthPolicy).order_by(ReauthPolicy.scope)).all()
    names = dict(
        session.execute(
            select(Group.id, Group.display_name).where(
                Group.id.in_([r.group_id for r in rows if r.group_id])
            )
        ).all()
    )
    glob = next((r for r in rows if r.scope == GLOBAL_SCOPE), None)
    return {
        "global": _view(glob) if glob is not None else None,
        "groups": [_view(r, names.get(r.group_id)) for r in rows if r.group_id is not None],
    }


def set_policy(
    session: Session,
    lifetime: str,
    *,
    required: bool,
    group: str | None,
    actor: str,
    second_device: bool = False,
) -> dict[str, Any]:
    """Set the global window, or one SCIM group's (by id or displayName), audited.

    ``second_device``: a user's second or later device needs an upstream sign-in
    before a trusted device's code approves it (:func:`approval_gate`).
    """
    seconds = _lifetime(lifetime)
    group_id = None
    scope = GLOBAL_SCOPE
    if group:
        found = _find_group(session, group)
        group_id, scope = found.id, f"group:{found.id}"
    row = session.get(ReauthPolicy, scope)
    before = _view(row) if row is not None else None
    if row is None:
        row = ReauthPolicy(scope=scope, group_id=group_id, lifetime=seconds, required=required)
        session.add(row)
    row.lifetime, row.required, row.updated_at, row.updated_by = seconds, required, utcnow(), actor
    row.second_device = second_device
    audit.record(
        session,
        "reauth.policy.set",
        "ok",
        actor=actor,
        details={
            "scope": scope,
            "lifetime": seconds,
            "required": required,
            "second_device": second_device,
            "before": before,
        },
    )
    ANY_POLICY.forget()
    return {
        "scope": scope,
        "lifetime": durations.format_duration(seconds),
        "required": required,
        "second_device": second_device,
    }


def clear_policy(session: Session, *, group: str | None, actor: str) -> dict[str, Any]:
    """Remove the global window or a group's, audited."""
    scope = GLOBAL_SCOPE
    if group:
        scope = f"group:{_find_group(session, group).id}"
    row = session.get(ReauthPolicy, scope)
    if row is not None:
        session.delete(row)
    audit.record(session, "reauth.policy.clear", "ok", actor=actor, details={"scope": scope})
    ANY_POLICY.forget()
    return {"scope": scope, "cleared": row is not None}


# -- a second device's trusted-device approval ----------------------------------------------


def second_device_required(session: Session, device_id: str) -> bool:
    """Whether the policy of this device's owner asks for an upstream sign-in before a
    trusted device's code may approve it (a pending device whose owner has another
    trusted device)."""
    device = session.get(Device, device_id)
    if device is None or device.state != "pending":
        return False
    policy = policy_for(session, device.user_id)
    if policy is None or not policy.second_device:
        return False
    other = session.execute(
        select(Device.id)
        .where(Device.user_id == device.user_id, Device.id != device_id)
        .where(Device.state == "trusted")
        .limit(1)
    ).first()
    return other is not None


def approval_proved(session: Session, txn_id: str, device_id: str) -> bool:
    """True when an upstream sign-in in ``txn_id`` proved the owner of ``device_id``
    (at the approve step, or when this sign-in enrolled the device)."""
    device = session.get(Device, device_id)
    if device is None:
        return False
    for purpose in ("approve", "enroll"):
        user = store.verified_user(session, txn_id, purpose)
        if user is not None and user.id == device.user_id:
            return True
    return False


def approval_needs_upstream(service: Services, txn_id: str, device_id: str) -> bool:
    """Whether the approve page must offer the upstream sign-in instead of the code."""
    with service.db.read_session() as session:
        return second_device_required(session, device_id) and not approval_proved(
            session, txn_id, device_id
        )


def approval_gate(
    service: Services, txn_id: str, device_id: str, *, remote_addr: str | None = None
) -> None:
    """Refuse a trusted-device code (or a new one) for ``device_id`` in sign-in ``txn_id``
    while the policy asks for an upstream sign-in that this sign-in has not had yet:
    :class:`Forbidden` ``upstream_required``, audited ``approval.upstream`` (denied).
    """
    with service.db.session() as session:
        if not second_device_required(session, device_id):
            return
        if approval_proved(session, txn_id, device_id):
            return
        device = session.get_one(Device, device_id)
        audit.record(
            session,
            "approval.upstream",
            "denied",
            code=UPSTREAM_REQUIRED,
            user_id=device.user_id,
            device_id=device_id,
            remote_addr=remote_addr,
            details={"txn": txn_id, "policy": "second_device"},
        )
    raise Forbidden(
        UPSTREAM_REQUIRED,
        "Sign in with your organization's identity provider before approving this device.",
        "Use the sign-in button on this page; then enter the code from your other device.",
    )
