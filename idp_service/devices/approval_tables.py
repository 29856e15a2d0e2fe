"""Tables of registration policies and trusted-device approval requests.

* ``registration_policies``: the run-time global policy (``group_id`` NULL,
  at most one such row, keyed ``scope = "global"``) and per-SCIM-group
  policies (``scope = "group:<id>"``), see ``idp_service/devices/registration_policy.py``.
* ``approval_requests``: one per pending device that a trusted device of the
  same user may approve with a verification code (``idp_service/devices/approve.py``).
* ``approval_notices``: the sealed notices (``trust_protocol/notice.py``) that
  carry the current code to each trusted device, with a keyed hash of that
  code (never the code); replaced when the code is.

Revision ``0009_registration_policies`` creates them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


class RegistrationPolicy(Base):
    """A registration policy: the global one, or one SCIM group's."""

    __tablename__ = "registration_policies"

    scope: Mapped[str] = mapped_column(String(80), primary_key=True)  # global | group:<id>
    group_id: Mapped[str | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), index=True
    )
    policy: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(256))


class ApprovalRequest(Base):
    """A pending device waiting for a code from one of its owner's trusted devices."""

    __tablename__ = "approval_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # open | approved | exhausted | closed
    code_seq: Mapped[int] = mapped_column(Integer, default=1)  # which code is current
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    close_reason: Mapped[str | None] = mapped_column(String(64))


Index("ix_approval_requests_device_status", ApprovalRequest.device_id, ApprovalRequest.status)


class ApprovalNotice(Base):
    """The current code of a request, sealed to one trusted device of the same user."""

    __tablename__ = "approval_notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    # HMAC-SHA256 (hex, server key) of the code sealed in this notice: each trusted
    # device gets its own code, so a correct code also says which device vouched.
    code_mac: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
