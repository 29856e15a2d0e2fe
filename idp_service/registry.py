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
