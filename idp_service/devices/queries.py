"""Device storage: the reads over devices that the console, the admin API and the CLI show,
and the plain writes that carry no rule of their own.

Handlers in ``idp_service/api`` and ``idp_service/admin`` reach devices through these
functions (or through ``idp_service/admin/queries.py``, the console's paged search)
and never build a statement themselves. The rules live in the services that call the
writes: :mod:`idp_service.devices.states` (every change of ``Device.state``),
:mod:`idp_service.devices.registry` (an admin's decisions) and
:mod:`idp_service.devices.approve`.

Every function takes the caller's session and commits nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, union
from sqlalchemy.orm import Session

from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.errors import NotFound
from idp_service.platform.identity import name_key
from idp_service.platform.models import DEVICE_STATES, Device, User, utcnow
from idp_service.posture import tables as pt
from trust_protocol.device_keys import fingerprint

# -- one device -------------------------------------------------------------------------------


def get(session: Session, device_id: str) -> Device | None:
    """The device ``device_id``, or None."""
    return session.get(Device, device_id)


def require(session: Session, device_id: str) -> Device:
    """The device ``device_id``; :class:`NotFound` ``device_not_found`` when there is none."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound("device_not_found", f"no device {device_id!r}")
    return device


def owner(session: Session, device: Device) -> User:
    """The device's owner."""
    user = session.get(User, device.user_id)
    if user is None:  # pragma: no cover - a foreign key holds it
        raise LookupError(device.user_id)
    return user


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


def json_of(session: Session, device: Device) -> dict[str, Any]:
    """:func:`device_json` of ``device`` with its owner."""
    return device_json(device, owner(session, device))


def facts(session: Session, device_id: str) -> pt.DeviceFacts | None:
    """The device's latest fact document, if it ever reported."""
    return session.get(pt.DeviceFacts, device_id)


def check_results(session: Session, device_id: str) -> list[pt.CheckResultRow]:
    """The latest result of each check on the device, by check id."""
    return list(
        session.scalars(
            select(pt.CheckResultRow)
            .where(pt.CheckResultRow.device_id == device_id)
            .order_by(pt.CheckResultRow.check_id)
        )
    )


def check_history(session: Session, device_id: str, *, limit: int) -> list[pt.CheckResultHistory]:
    """The device's latest ``limit`` changes of a check result, newest first."""
    return list(
        session.scalars(
            select(pt.CheckResultHistory)
            .where(pt.CheckResultHistory.device_id == device_id)
            .order_by(pt.CheckResultHistory.id.desc())
            .limit(limit)
        )
    )


def flags(session: Session, device_id: str, *, limit: int | None = None) -> list[DeviceFlag]:
    """The device's flags (open and resolved): newest first up to ``limit``, else all, oldest
    first."""
    query = select(DeviceFlag).where(DeviceFlag.device_id == device_id)
    if limit is None:
        return list(session.scalars(query.order_by(DeviceFlag.id)))
    return list(session.scalars(query.order_by(DeviceFlag.id.desc()).limit(limit)))


def delete_with_data(session: Session, device: Device) -> None:
    """Delete ``device`` with its posture data and flags (the caller audits why)."""
    tables = (pt.DeviceFacts, pt.DeviceFactsHistory, pt.CheckResultRow, pt.CheckResultHistory)
    for table in (*tables, DeviceFlag):
        session.execute(delete(table).where(table.device_id == device.id))
    session.delete(device)


# -- many devices -----------------------------------------------------------------------------


def list_devices(session: Session, *, user_name: str | None = None) -> list[dict[str, Any]]:
    """Devices with owners, newest first, optionally for one user."""
    query = select(Device, User).join(User, User.id == Device.user_id)
    if user_name:
        query = query.where(User.user_name_lower == name_key(user_name))
    rows = session.execute(query.order_by(Device.first_seen.desc())).all()
    return [device_json(d, u) for d, u in rows]


def of_user(session: Session, user_id: str) -> list[Device]:
    """A user's devices, newest first."""
    return list(
        session.scalars(
            select(Device).where(Device.user_id == user_id).order_by(Device.first_seen.desc())
        )
    )


def ids_of_user(session: Session, user_id: str, states: tuple[str, ...] | None = None) -> list[str]:
    """The ids of a user's devices (in one of ``states``, when given), in id order."""
    query = select(Device.id).where(Device.user_id == user_id)
    if states is not None:
        query = query.where(Device.state.in_(states))
    return list(session.scalars(query.order_by(Device.id)))


def page(
    session: Session,
    *,
    limit: int,
    state: str | None = None,
    flagged: bool = False,
    review: bool = False,
    platform: str | None = None,
    user: str | None = None,
    pattern: str | None = None,
    after: tuple[dt.datetime, str] | None = None,
) -> list[tuple[Device, User]]:
    """Up to ``limit + 1`` devices with owners, newest registered first (the admin API's lists).

    ``user`` is a user id or userName; ``pattern`` an ILIKE pattern (escape ``\\``) matched
    against ids, hostnames, serials, hardware UUIDs, userNames and e-mail addresses;
    ``after`` the ``(first_seen, id)`` of the last device of the previous page.
    """
    stmt = select(Device, User).join(User, User.id == Device.user_id)
    if state:
        stmt = stmt.where(Device.state == state)
    if flagged:
        stmt = stmt.where(Device.id.in_(flagged_ids()))
    if review:
        stmt = stmt.where(Device.id.in_(review_ids()))
    if platform:
        stmt = stmt.where(Device.platform == platform)
    if user:
        stmt = stmt.where(or_(User.id == user, User.user_name_lower == name_key(user)))
    if pattern:
        stmt = stmt.where(
            or_(
                Device.id.ilike(pattern, escape="\\"),
                Device.hostname.ilike(pattern, escape="\\"),
                Device.serial.ilike(pattern, escape="\\"),
                Device.hardware_uuid.ilike(pattern, escape="\\"),
                User.user_name.ilike(pattern, escape="\\"),
                User.email.ilike(pattern, escape="\\"),
            )
        )
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            or_(Device.first_seen < at, and_(Device.first_seen == at, Device.id < last_id))
        )
    rows = session.execute(
        stmt.order_by(Device.first_seen.desc(), Device.id.desc()).limit(limit + 1)
    ).all()
    return [(d, u) for d, u in rows]


def flagged_ids() -> Any:
    """Ids of devices with open flags (an indexed subquery on ``device_flags``)."""
    return select(DeviceFlag.device_id).where(DeviceFlag.resolved_at.is_(None))


def review_ids() -> Any:
    """Ids of devices that need review: suspended, or with open flags (two indexed
    lookups, united: an OR would walk the whole device table)."""
    return union(select(Device.id).where(Device.state == "suspended"), flagged_ids())


def review_count(session: Session) -> int:
    """How many devices need review."""
    return int(session.scalar(select(func.count()).select_from(review_ids().subquery())) or 0)


def state_counts(session: Session) -> dict[str, int]:
    """How many devices are in each state (every state, zero included)."""
    counts = dict.fromkeys(DEVICE_STATES, 0)
    for state, n in session.execute(select(Device.state, func.count()).group_by(Device.state)):
        counts[state] = int(n)
    return counts


# -- approval requests ------------------------------------------------------------------------


def open_request(session: Session, device_id: str, *, lock: bool = False) -> ApprovalRequest | None:
    """The device's open approval request, if any (row-locked with ``lock``)."""
    query = select(ApprovalRequest).where(
        ApprovalRequest.device_id == device_id, ApprovalRequest.status == "open"
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query.limit(1)).first()


def close_request(session: Session, req: ApprovalRequest, status: str, reason: str) -> None:
    """End ``req`` as ``status`` (approved, exhausted, closed) and drop its sealed codes."""
    req.status, req.closed_at, req.close_reason = status, utcnow(), reason
    session.execute(delete(ApprovalNotice).where(ApprovalNotice.request_id == req.id))


__all__ = [
    "check_history",
    "check_results",
    "close_request",
    "delete_with_data",
    "device_json",
    "facts",
    "flagged_ids",
    "flags",
    "get",
    "ids_of_user",
    "json_of",
    "list_devices",
    "of_user",
    "open_request",
    "owner",
    "page",
    "require",
    "review_count",
    "review_ids",
    "state_counts",
]
