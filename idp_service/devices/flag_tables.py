"""Device flags: what clone, duplicate and staleness detection found (revision ``0010``).

A flag is evidence for an administrator to review; it is *open* until resolved
(by approving, denying or revoking the device, or by marking it reviewed).
``idp_service/devices/detection.py`` writes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow

FLAG_KINDS = ("hardware_mismatch", "duplicate_hardware", "concurrent_agents", "stale")


class DeviceFlag(Base):
    """One finding about a device, with its evidence; open while ``resolved_at`` is NULL."""

    __tablename__ = "device_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    evidence: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    resolved_by: Mapped[str | None] = mapped_column(String(256))
    resolution: Mapped[str | None] = mapped_column(Text)
