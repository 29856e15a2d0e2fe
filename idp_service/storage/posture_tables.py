"""Tables of posture telemetry: each device's latest facts, a bounded history, check results.

* ``device_facts``: the latest fact document per device (one row, upserted).
* ``device_facts_history``: a ring of the last ``FACTS_HISTORY`` documents per
  device, keyed by ``(device_id, slot)``; bounded by construction, no purge job.
* ``check_results``: the latest result of each check on each device, with when
  it first failed (the clock of ``warn_then_block`` deadlines).
* ``check_result_history``: one row each time a result *changes*.
* ``exemptions``: per device, user or group, with an expiry and a reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.storage.models import Base, utcnow

FACTS_HISTORY = 20


class DeviceFacts(Base):
    """The latest facts a device reported."""

    __tablename__ = "device_facts"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    report_seq: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[str | None] = mapped_column(String(16))
    collected_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class DeviceFactsHistory(Base):
    """A ring buffer of a device's recent fact documents."""

    __tablename__ = "device_facts_history"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_seq: Mapped[int] = mapped_column(Integer)
    collected_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)


class CheckResultRow(Base):
    """The latest result of one check on one device."""

    __tablename__ = "check_results"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    check_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    evaluated_at: Mapped[dt.datetime]
    first_failed_at: Mapped[dt.datetime | None]


class CheckResultHistory(Base):
    """A change of a check's result on a device."""

    __tablename__ = "check_result_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    check_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExemptionRow(Base):
    """A check that does not apply to a device, user or group until ``expires_at``."""

    __tablename__ = "exemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    check_id: Mapped[str] = mapped_column(String(128), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # device | user | group
    subject: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[dt.datetime]
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
