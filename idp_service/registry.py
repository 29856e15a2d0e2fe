"""The device registry: queries over devices and their owners."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp_service.storage.models import Device, User
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
        query = query.where(User.user_name_lower == user_name.lower())
    rows = session.execute(query.order_by(Device.first_seen.desc())).all()
    return [device_json(d, u) for d, u in rows]


TRANSITIONS: dict[str, tuple[str, ...]] = {
    # action -> states it may start from
    "approve": ("pending", "denied"),
    "deny": ("pending",),
    "revoke": ("trusted", "pending"),
    "retrust": ("revoked", "denied"),
}
TARGET = {"approve": "trusted", "deny": "denied", "revoke": "revoked", "retrust": "trusted"}


def change_state(
    session: Session, device_id: str, action: str, *, reason: str, actor: str
) -> Device:
    """Apply an admin action (approve, deny, revoke, re-trust), audited, effective at once."""
    from idp_service import audit
    from idp_service.errors import ApiError

    if action not in TRANSITIONS:
        raise ApiError("bad_action", f"unknown action {action!r}")
    if not reason.strip():
        raise ApiError("reason_required", "Every device decision needs a reason.")
    device = session.get(Device, device_id)
    if device is None:
        raise ApiError("device_not_found", f"no device {device_id!r}", 404)
    if device.state not in TRANSITIONS[action]:
        raise ApiError("bad_transition", f"cannot {action} a device that is {device.state}", 409)
    before = device.state
    device.state = TARGET[action]
    device.state_reason = reason
    audit.record(
        session,
        f"device.{action}",
        "ok",
        actor=actor,
        user_id=device.user_id,
        device_id=device.id,
        details={"from": before, "to": device.state, "reason": reason},
    )
    return device


def delete_device(session: Session, device_id: str, *, reason: str, actor: str) -> None:
    """Forget a device and its telemetry (its audit trail stays), audited."""
    from sqlalchemy import delete

    from idp_service import audit
    from idp_service.errors import ApiError
    from idp_service.storage.posture_tables import (
        CheckResultHistory,
        CheckResultRow,
        DeviceFacts,
        DeviceFactsHistory,
    )

    if not reason.strip():
        raise ApiError("reason_required", "Every device decision needs a reason.")
    device = session.get(Device, device_id)
    if device is None:
        raise ApiError("device_not_found", f"no device {device_id!r}", 404)
    for table in (DeviceFacts, DeviceFactsHistory, CheckResultRow, CheckResultHistory):
        session.execute(delete(table).where(table.device_id == device_id))
    details = {"state": device.state, "hostname": device.hostname, "reason": reason}
    session.delete(device)
    audit.record(
        session,
        "device.delete",
        "ok",
        actor=actor,
        user_id=device.user_id,
        device_id=device_id,
        details=details,
    )


def change_owner(
    session: Session, device_id: str, user_name: str, *, reason: str, actor: str
) -> Device:
    """Give a device to another (active) user, audited; effective at the next sign-in."""
    from idp_service import audit
    from idp_service.errors import ApiError

    if not reason.strip():
        raise ApiError("reason_required", "Every device decision needs a reason.")
    device = session.get(Device, device_id)
    if device is None:
        raise ApiError("device_not_found", f"no device {device_id!r}", 404)
    owner = session.scalar(select(User).where(User.user_name_lower == user_name.strip().lower()))
    if owner is None or not owner.active:
        raise ApiError("user_not_found", f"no active user {user_name!r}", 404)
    before = device.user_id
    device.user_id = owner.id
    device.state_reason = reason
    audit.record(
        session,
        "device.change_owner",
        "ok",
        actor=actor,
        user_id=owner.id,
        device_id=device.id,
        details={"from_user_id": before, "to_user_id": owner.id, "reason": reason},
    )
    return device
