"""The console's read queries, shaped to stay fast at 100,000 devices.

Every list is paged by keyset (never by counting or by deep offsets): devices by
``(last_seen, id)`` newest first, audit events by ``id``. Search is by exact id,
hardware UUID or serial, or by *prefix* of hostname, serial or userName, each a
range on an indexed column, so the database never scans the device table.
``bench``-style timings at 100k devices: ``tests/test_admin_scale.py``. Counts and the
review set are :mod:`idp_service.devices.queries`'s.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, union
from sqlalchemy.orm import Session

from idp_service.devices.queries import flagged_ids, review_ids
from idp_service.directory.queries import prefix_range
from idp_service.platform.errors import Invalid
from idp_service.platform.identity import name_key
from idp_service.platform.models import DEVICE_STATES, AuditEvent, Device, User
from idp_service.posture.tables import CheckResultRow
from posture_checks.evaluator import FAILING, Status
from trust_protocol.facts_schema import PLATFORMS

PAGE = 50
STATUSES = tuple(s.value for s in Status)
MAX_QUERY = 256


_prefix = prefix_range  # ``column`` starts with ``text``, as a range an index answers


@dataclass(frozen=True)
class DeviceFilter:
    """What the devices page asks for; built from query parameters by :meth:`parse`."""

    q: str = ""
    state: str = ""
    platform: str = ""
    after: tuple[dt.datetime, str] | None = None
    flagged: bool = False  # only devices with open flags (detection.py)
    review: bool = False  # suspended, or with open flags
    check: str = ""  # only devices whose stored result for this check ...
    status: str = ""  # ... has this status (a Status value)

    @classmethod
    def parse(cls, args: Any) -> DeviceFilter:
        """Validate ``request.args``; bad input is a 400 with a stable code."""
        q = (args.get("q") or "").strip()
        state = (args.get("state") or "").strip()
        platform = (args.get("platform") or "").strip()
        check = (args.get("check") or "").strip()
        status = (args.get("status") or "").strip().upper()
        if len(q) > MAX_QUERY or len(platform) > 32 or len(check) > 128:
            raise Invalid("bad_query", "search text is too long")
        if status and status not in STATUSES:
            raise Invalid("bad_status", f"status must be one of {', '.join(STATUSES)}")
        if status and not check:
            raise Invalid("bad_query", "status filters the results of one check: give check too")
        if state and state not in DEVICE_STATES:
            raise Invalid("bad_state", f"state must be one of {', '.join(DEVICE_STATES)}")
        flagged = (args.get("flagged") or "").strip()
        if flagged not in ("", "0", "1"):
            raise Invalid("bad_query", "flagged is 1 (only flagged devices) or 0")
        return cls(
            q=q,
            state=state,
            platform=platform,
            after=parse_cursor(args.get("after")),
            flagged=flagged == "1",
            check=check,
            status=status,
        )

    def args(self, **change: Any) -> dict[str, str]:
        """Query parameters for a link to this filter (with ``change`` applied)."""
        values = {
            "q": self.q,
            "state": self.state,
            "platform": self.platform,
            "flagged": "1" if self.flagged else "",
            "check": self.check,
            "status": self.status,
            **change,
        }
        return {k: v for k, v in values.items() if v}


def parse_cursor(text: str | None) -> tuple[dt.datetime, str] | None:
    """``<iso time>|<device id>`` -> a keyset position; a 400 when it is not one."""
    if not text:
        return None
    stamp, sep, device_id = text.partition("|")
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        when = None
    if not sep or when is None or when.tzinfo is None or not 0 < len(device_id) <= 64:
        raise Invalid("bad_cursor", "not a page cursor from this console")
    return when, device_id


def cursor(device: Device) -> str:
    """The keyset position just after ``device``."""
    return f"{device.last_seen.isoformat()}|{device.id}"


def search_devices(
    session: Session, flt: DeviceFilter, *, limit: int = PAGE
) -> tuple[list[tuple[Device, str]], str | None]:
    """One page of ``(device, owner userName)``, newest seen first, and the next cursor."""
    query = select(Device, User.user_name).join(User, User.id == Device.user_id)
    if flt.state:
        query = query.where(Device.state == flt.state)
    if flt.platform:
        query = query.where(Device.platform == flt.platform)
    if flt.flagged:
        query = query.where(Device.id.in_(flagged_ids()))
    if flt.review:
        query = query.where(Device.id.in_(review_ids()))
    if flt.check:
        results = select(CheckResultRow.device_id).where(CheckResultRow.check_id == flt.check)
        if flt.status:
            results = results.where(CheckResultRow.status == flt.status)
        query = query.where(Device.id.in_(results))
    if flt.q:
        q = flt.q
        owners = select(User.id).where(_prefix(User.user_name_lower, name_key(q)))
        # One indexed lookup per branch, united: an OR would walk the whole sort index.
        branches = [
            Device.id == q,
            Device.hardware_uuid == q,
            _prefix(Device.serial, q),
            _prefix(Device.hostname, q),
            Device.user_id.in_(owners),
        ]
        if q.upper() != q:
            branches.append(_prefix(Device.serial, q.upper()))
        if q.lower() != q:
            branches.append(_prefix(Device.hostname, q.lower()))
        query = query.where(Device.id.in_(union(*(select(Device.id).where(b) for b in branches))))
    if flt.after is not None:
        when, device_id = flt.after
        query = query.where(
            or_(Device.last_seen < when, and_(Device.last_seen == when, Device.id < device_id))
        )
    rows = session.execute(
        query.order_by(Device.last_seen.desc(), Device.id.desc()).limit(limit + 1)
    ).all()
    page = [(d, name) for d, name in rows[:limit]]
    more = cursor(page[-1][0]) if len(rows) > limit else None
    return page, more


def platforms(session: Session) -> list[str]:
    """The platforms of the filter menu (the agents' platforms; no scan of the fleet)."""
    return list(PLATFORMS)


def failing_checks(session: Session, *, limit: int | None = 20) -> list[tuple[str, int]]:
    """Checks failing (or stale) on the most devices, with how many (all with ``limit`` None)."""
    n = func.count().label("n")
    query = (
        select(CheckResultRow.check_id, n)
        .where(CheckResultRow.status.in_(sorted(s.value for s in FAILING)))
        .group_by(CheckResultRow.check_id)
        .order_by(n.desc(), CheckResultRow.check_id)
    )
    rows = session.execute(query if limit is None else query.limit(limit)).all()
    return [(r.check_id, int(r.n)) for r in rows]


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit log page."""

    action: str = ""
    device_id: str = ""
    user: str = ""
    before: int | None = None

    @classmethod
    def parse(cls, args: Any) -> AuditFilter:
        """Validate ``request.args``; bad input is a 400 with a stable code."""
        values = {k: (args.get(k) or "").strip() for k in ("action", "device_id", "user")}
        if any(len(v) > MAX_QUERY for v in values.values()):
            raise Invalid("bad_query", "filter text is too long")
        before = args.get("before") or ""
        if before and (not (before.isascii() and before.isdigit()) or len(before) > 18):
            raise Invalid("bad_cursor", "not a page cursor from this console")
        return cls(**values, before=int(before) if before else None)

    def args(self, **change: Any) -> dict[str, str]:
        """Query parameters for a link to this filter (with ``change`` applied)."""
        values = {
            "action": self.action,
            "device_id": self.device_id,
            "user": self.user,
            **change,
        }
        return {k: str(v) for k, v in values.items() if v}


def audit_events(
    session: Session,
    *,
    limit: int,
    action: str | None = None,
    outcome: str | None = None,
    actor: str | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    before: int | None = None,
) -> list[AuditEvent]:
    """Up to ``limit + 1`` audit events, newest first, before the id ``before``, matching
    every filter given (exact values). The console's audit page and ``GET /api/v1/audit``."""
    query = select(AuditEvent)
    for column, value in (
        (AuditEvent.action, action),
        (AuditEvent.outcome, outcome),
        (AuditEvent.actor, actor),
        (AuditEvent.user_id, user_id),
        (AuditEvent.device_id, device_id),
    ):
        if value:
            query = query.where(column == value)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))


def audit_page(
    session: Session, flt: AuditFilter, *, limit: int = PAGE
) -> tuple[list[AuditEvent], int | None]:
    """One page of audit events, newest first, and the id to continue before."""
    user_id = None
    if flt.user:
        found = session.scalar(select(User.id).where(User.user_name_lower == name_key(flt.user)))
        user_id = found or flt.user
    rows = audit_events(
        session,
        limit=limit,
        action=flt.action,
        device_id=flt.device_id,
        user_id=user_id,
        before=flt.before,
    )
    more = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], more
