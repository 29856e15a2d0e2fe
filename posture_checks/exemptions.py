"""Exemptions: a check (or every check) waived for one device, user or group until a date.

Pure logic over data the caller passes in: the service stores exemptions and
hands them here with the subject being evaluated. An expired exemption never
matches; when several match, the one lasting longest wins.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SCOPES = ("device", "user", "group")
ALL_CHECKS = "*"


class ExemptionError(ValueError):
    """An exemption record is malformed."""


@dataclass(frozen=True)
class Exemption:
    """``check_id`` ("*" for all) is waived for ``scope``/``subject`` until ``expires_at``."""

    check_id: str
    scope: str
    subject: str
    expires_at: dt.datetime
    reason: str
    granted_by: str | None = None

    def active(self, now: dt.datetime) -> bool:
        """True until the expiry time."""
        return now < self.expires_at

    def covers(
        self, check_id: str, *, device_id: str | None, user: str | None, groups: Iterable[str]
    ) -> bool:
        """True if this exemption is about ``check_id`` and this device, user or a group."""
        if self.check_id not in (check_id, ALL_CHECKS):
            return False
        if self.scope == "device":
            return device_id is not None and self.subject == device_id
        if self.scope == "user":
            return user is not None and self.subject == user
        return self.subject in set(groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "check_id": self.check_id,
            "scope": self.scope,
            "subject": self.subject,
            "expires_at": self.expires_at.isoformat(),
            "reason": self.reason,
            "granted_by": self.granted_by,
        }


def parse_exemption(data: Mapping[str, Any]) -> Exemption:
    """Validate a stored/admin-entered record; raise ExemptionError saying what is wrong."""
    if not isinstance(data, Mapping):
        raise ExemptionError("an exemption must be a mapping")
    check_id = data.get("check_id")
    scope = data.get("scope")
    subject = data.get("subject")
    reason = data.get("reason")
    expires = data.get("expires_at")
    if not isinstance(check_id, str) or not check_id:
        raise ExemptionError("check_id must be a check id or *")
    if scope not in SCOPES:
        raise ExemptionError(f"scope must be one of {', '.join(SCOPES)}")
    if not isinstance(subject, str) or not subject:
        raise ExemptionError("subject must name the device, user or group")
    if not isinstance(reason, str) or not reason.strip():
        raise ExemptionError("an exemption needs a reason")
    if isinstance(expires, str):
        try:
            expires = dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            raise ExemptionError("expires_at must be an ISO 8601 time") from None
    if not isinstance(expires, dt.datetime) or expires.tzinfo is None:
        raise ExemptionError("expires_at must be a time with a timezone")
    granted_by = data.get("granted_by")
    return Exemption(
        check_id,
        scope,
        subject,
        expires,
        reason.strip(),
        granted_by if isinstance(granted_by, str) else None,
    )


def find_exemption(
    exemptions: Iterable[Exemption],
    check_id: str,
    *,
    now: dt.datetime,
    device_id: str | None = None,
    user: str | None = None,
    groups: Iterable[str] = (),
) -> Exemption | None:
    """The active exemption for this check and subject that lasts longest, if any."""
    groups = list(groups)
    matching = [
        e
        for e in exemptions
        if e.active(now) and e.covers(check_id, device_id=device_id, user=user, groups=groups)
    ]
    return max(matching, key=lambda e: e.expires_at, default=None)
