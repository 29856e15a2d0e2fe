"""Attribute sources for assertions, and the per-SP mapping of sources to SAML attribute names.

Sources: ``email``, ``display_name``, ``groups``, ``device_id`` and ``posture``
(the device posture summary). Groups come from the SCIM surface
(:func:`groups_of_user`); posture from the posture surface (:func:`posture_summary`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from idp_service.directory.groups import groups_of
from idp_service.platform.models import Device, User
from idp_service.posture.service import summary_for_device

SOURCES = ("email", "display_name", "groups", "device_id", "posture")
DEFAULT_MAPPING: dict[str, str] = {
    "email": "email",
    "display_name": "displayName",
    "groups": "groups",
    "device_id": "deviceId",
    "posture": "devicePosture",
}


def groups_of_user(session: Session, user_id: str) -> list[str]:
    """The user's SCIM groups (display names)."""
    return [str(g) for g in groups_of(session, user_id)]


def posture_summary(session: Session, device_id: str) -> dict[str, str]:
    """The device's posture summary; the ``posture`` key is what the attribute carries."""
    return summary_for_device(session, device_id)


def collect(
    session: Session, mapping: dict[str, str], user: User, device: Device
) -> list[tuple[str, list[str]]]:
    """``[(attribute name, values)]`` for the sources ``mapping`` selects, in source order."""
    out: list[tuple[str, list[str]]] = []
    for source in SOURCES:
        name = mapping.get(source)
        if not name:
            continue
        values: list[str]
        if source == "email":
            values = [user.email or user.user_name]
        elif source == "display_name":
            values = [user.display_name] if user.display_name else []
        elif source == "groups":
            values = groups_of_user(session, user.id)
        elif source == "device_id":
            values = [device.id]
        else:
            values = [posture_summary(session, device.id).get("posture", "unknown")]
        out.append((name, values))
    return out


def validate_mapping(mapping: Any) -> dict[str, str]:
    """Check an attribute mapping from the CLI or API; raise ``ValueError`` with why."""
    if not isinstance(mapping, dict):
        raise ValueError("attributes must be an object of source -> attribute name")
    clean: dict[str, str] = {}
    for source, name in mapping.items():
        if source not in SOURCES:
            raise ValueError(f"unknown attribute source {source!r}; sources: {', '.join(SOURCES)}")
        if name in (None, ""):
            continue
        if not isinstance(name, str) or len(name) > 256 or any(c in name for c in "<>&\"'"):
            raise ValueError(f"invalid attribute name for {source!r}")
        clean[source] = name
    return clean
