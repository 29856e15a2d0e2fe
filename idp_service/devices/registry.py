"""An administrator's decisions about a device: approve, deny, revoke, re-trust, delete, give
to another owner. Each takes a reason, is audited and takes effect at the next sign-in.

State changes go through :mod:`idp_service.devices.states`; the reads the console, the
admin API and the CLI show are in :mod:`idp_service.devices.queries`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from idp_service.devices import detection, states
from idp_service.devices import queries as device_queries
from idp_service.directory.sessions import end_for_device
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Invalid, NotFound
from idp_service.platform.models import Device, User
from idp_service.upstream import reauth


def _require_reason(reason: str) -> None:
    if not reason.strip():
        raise Invalid("reason_required", "Every device decision needs a reason.")


def change_state(
    session: Session, device_id: str, action: str, *, reason: str, actor: str
) -> Device:
    """Apply an admin action (approve, deny, revoke, re-trust), audited, effective at once.

    The device's open flags (``idp_service/devices/detection.py``) are resolved with the reason.
    """
    if action not in states.ADMIN_ACTIONS:
        raise Invalid("bad_action", f"unknown action {action!r}")
    _require_reason(reason)
    device = device_queries.require(session, device_id)
    states.check(device, action)
    resolved = detection.on_decision(session, device, action, reason=reason, actor=actor)
    states.move(
        session,
        device,
        action,
        reason=reason,
        actor=actor,
        request_reason=f"admin {action}",  # an admin decided instead of a code
        details={"reason": reason, **({"flags_resolved": resolved} if resolved else {})},
    )
    return device


def delete_device(session: Session, device_id: str, *, reason: str, actor: str) -> dict[str, Any]:
    """Forget a device and its posture data, audited; its next sign-in is refused as unknown."""
    _require_reason(reason)
    device = device_queries.require(session, device_id)
    data = device_queries.json_of(session, device)
    end_for_device(session, device_id, "device_deleted")
    reauth.revoke_device(session, device_id, "device_deleted")
    device_queries.delete_with_data(session, device)
    audit.record(
        session,
        "device.delete",
        "ok",
        actor=actor,
        user_id=data["user_id"],
        device_id=device_id,
        details={
            "reason": reason,
            "state": data["state"],
            "hostname": data["hostname"],
            "serial": data["serial"],
            "sign_key_fingerprint": data["sign_key_fingerprint"],
        },
    )
    return data


def change_owner(
    session: Session, device_id: str, user_id: str, *, reason: str, actor: str
) -> Device:
    """Give a device to another (active) user, audited; effective at the next sign-in."""
    _require_reason(reason)
    device = device_queries.require(session, device_id)
    user = session.get(User, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("user_not_found", f"no user {user_id!r}")
    if not user.active:
        raise Conflict("user_inactive", "a device cannot be given to a deactivated user")
    before = device.user_id
    if before == user.id:
        raise Conflict("owner_unchanged", "the device already belongs to this user")
    device.user_id = user.id
    audit.record(
        session,
        "device.change_owner",
        "ok",
        actor=actor,
        user_id=user.id,
        device_id=device.id,
        details={"from_user_id": before, "to_user_id": user.id, "reason": reason},
    )
    return device
