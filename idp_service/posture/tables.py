"""Tables of posture telemetry: each device's latest facts, a bounded history, check results.

* ``device_facts``: the latest facts per device (one row). Its ``facts`` column
  (attribute ``stored``) is the document as of the last report whose *content*
  changed; the fields that change in every report by nature (``collected_at``,
  ``uptime_seconds``) of later, otherwise identical reports are kept in the
  small ``volatile`` column, so a repeated report rewrites a few bytes rather
  than the whole document. The ``DeviceFacts.facts`` attribute is the latest
  document, both put together.
  ``digest`` is the content digest of ``facts`` and ``inputs`` the digest of
  every check's inputs at the last evaluation (``posture_checks.incremental``).
* ``device_facts_history``: a ring of the last ``FACTS_HISTORY`` *distinct*
  documents per device (one slot per report whose content changed), keyed by
  ``(device_id, slot)``; bounded by construction, no purge job.
* ``check_results``: the latest result of each check on each device, with when
  it first failed (the clock of ``warn_then_block`` deadlines) and the input key
  it was computed from; ``evaluated_at`` is when it was last computed (a
  report that leaves a check's inputs unchanged does not recompute it).
* ``check_result_history``: one row each time a result *changes*.
* ``exemptions``: per device, user or group, with an expiry and a reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow

FACTS_HISTORY = 20


class DeviceFacts(Base):
    """The latest facts a device reported."""

    __tablename__ = "device_facts"

    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    report_seq: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[str | None] = mapped_column(String(16))
    collected_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stored: Mapped[dict[str, Any]] = mapped_column("facts", JSON)
    volatile: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    digest: Mapped[str | None] = mapped_column(String(32))
    inputs: Mapped[str | None] = mapped_column(String(32))
    history_seq: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def facts(self) -> dict[str, Any]:
        """The latest fact document: the stored one with the latest volatile fields."""
        if not self.volatile or not isinstance(self.stored, dict):
            return self.stored
        return {**self.stored, **self.volatile}

    @facts.setter
    def facts(self, document: dict[str, Any]) -> None:
        self.stored = document
        self.volatile = None


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
    inputs: Mapped[str | None] = mapped_column(String(32))


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
