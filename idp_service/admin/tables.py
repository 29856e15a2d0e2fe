"""Storage of the admin console: sessions, one-time bootstrap tokens, the indexes its pages use.

``admin_sessions`` (revision ``0016``) holds one row per console session; the
browser's cookie holds only the session's random secret, whose SHA-256 is the
row's id, so a session ends on the server (sign-out, revocation) for every
copy of the cookie at once.

The indexes live here (not on the models) because only the console's queries
need them; they attach to the shared tables' metadata, and revision
``0006_admin_console`` creates them. The device list is paged by keyset on
``(last_seen, id)``, optionally within one state; searches are prefix ranges on
hostname and serial (serial already has an index), failing checks are counted
by ``(status, check_id)``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, Device, utcnow
from idp_service.posture.tables import CheckResultRow


class AdminBootstrapToken(Base):
    """A one-time token from ``devicetrust admin bootstrap``. Only its SHA-256 is stored."""

    __tablename__ = "admin_bootstrap_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(256))


class AdminSession(Base):
    """One console session; the cookie holds the secret whose SHA-256 is ``id``."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    via: Mapped[str] = mapped_column(String(16))  # "device" or "bootstrap"
    user_name: Mapped[str] = mapped_column(String(256))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(32))


Index("ix_devices_last_seen_id", Device.last_seen, Device.id)
Index("ix_devices_state_last_seen_id", Device.state, Device.last_seen, Device.id)
Index("ix_devices_platform_last_seen_id", Device.platform, Device.last_seen, Device.id)
Index("ix_devices_hostname", Device.hostname)
Index("ix_check_results_status_check_id", CheckResultRow.status, CheckResultRow.check_id)
