"""The device registry: queries over devices and their owners."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.platform.identity import name_key
from idp_service.platform.models import Device, User
from trust_protocol.device_keys import fingerprint


def device_json(device: Device, user: User) -> dict[str, Any]:
    """A device as the CLI and API show it (public keys as fingerprints)."""
    return {
        "id": device.id,
        "state": device.state,
        "state_reason": device.state_reason,
        "user": user.user_name,
        "user_id": user.id,
        "hostname": device.hostname,
        "platform": device.platform,
        "hardware_uuid": device.hardware_uuid,
        "serial": device.serial,
        "agent_version": device.agent_version,
        "sign_key_fingerprint": fingerprint(device.sign_key),
        "first_seen": device.first_seen.isoformat(),
        "last_seen": device.last_seen.isoformat(),
        "last_clock_skew": device.last_clock_skew,
    }


def list_devices(session: Session, *, user_name: str | None = None) -> list[dict[str, Any]]:
    """Devices with owners, newest first, optionally for one user."""
    query = select(Device, User).join(User, User.id == Device.user_id)
    if user_name:
        query = query.where(User.user_name_lower == name_key(user_name))
    rows = session.execute(query.order_by(Device.first_seen.desc())).all()
    return [device_json(d, u) for d, u in rows]


TRANSITIONS: dict[str, tuple[str, ...]] = {
    # action -> states it may start from
    "approve": ("pending", "denied", "suspended"),
    "deny": ("pending", "suspended"),
    "revoke": ("trusted", "pending", "suspended"),
    "retrust": ("revoked", "denied"),
}
TARGET = {"approve": "trusted", "deny": "denied", "revoke": "revoked", "retrust": "trusted"}


def change_state(
    session: Session, device_id: str, action: str, *, reason: str, actor: str
) -> Device:
    """Apply an admin action (approve, deny, revoke, re-trust), audited, effective at once.

    The device's open flags (``idp_service/devices/detection.py``) are resolved with the reason.
    """
    from idp_service.devices import detection
    from idp_service.platform import audit
    from idp_service.platform.errors import Conflict, Invalid, NotFound

    if action not in TRANSITIONS:
        raise Invalid("bad_action", f"unknown action {action!r}")
    if not reason.strip():
        raise Invalid("reason_required", "Every device decision needs a reason.")
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device_not_found", f"no device {device_id!r}")
    if device.state not in TRANSITIONS[action]:
        raise Conflict("bad_transition", f"cannot {action} a device that is {device.state}")
    before = device.state
    device.state = TARGET[action]
    device.state_reason = reason
    from idp_service.devices.approve import close_for_device

    close_for_device(session, device.id, f"admin {action}")  # an admin decided instead
    if device.state != "trusted":
        from idp_service.admin.sessions import end_for_device

        end_for_device(session, device.id, f"device_{device.state}")
    resolved = detection.on_decision(session, device, action, reason=reason, actor=actor)
    audit.record(
        session,
        f"device.{action}",
        "ok",
        actor=actor,
        user_id=device.user_id,
        device_id=device.id,
        details={
            "from": before,
            "to": device.state,
            "reason": reason,
            **({"flags_resolved": resolved} if resolved else {}),
        },
    )
    return device


def _require_reason(reason: str) -> None:
    from idp_service.platform.errors import Invalid

    if not reason.strip():
        raise Invalid("reason_required", "Every device decision needs a reason.")


def delete_device(session: Session, device_id: str, *, reason: str, actor: str) -> dict[str, Any]:
    """Forget a device and its posture data, audited; its next sign-in is refused as unknown."""
    from sqlalchemy import delete

    from idp_service.devices.flag_tables import DeviceFlag
    from idp_service.platform import audit
    from idp_service.platform.errors import NotFound
    from idp_service.posture import tables as pt

    _require_reason(reason)
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device_not_found", f"no device {device_id!r}")
    data = device_json(device, session.get(User, device.user_id))
    from idp_service.admin.sessions import end_for_device

    end_for_device(session, device_id, "device_deleted")
    tables = (pt.DeviceFacts, pt.DeviceFactsHistory, pt.CheckResultRow, pt.CheckResultHistory)
    for table in (*tables, DeviceFlag):
        session.execute(delete(table).where(table.device_id == device_id))
    session.delete(device)
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
    from idp_service.platform import audit
    from idp_service.platform.errors import Conflict, NotFound

    _require_reason(reason)
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device_not_found", f"no device {device_id!r}")
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
