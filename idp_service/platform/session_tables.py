"""The table of console sessions, below every feature that ends them.

``admin_sessions`` (revision ``0016``) holds one row per console session; the
browser's cookie holds only the session's random secret, whose SHA-256 is the
row's id, so a session ends on the server (sign-out, revocation) for every
copy of the cookie at once. The console opens and looks them up
(``idp_service/admin/sessions.py``); the directory and device decisions that
end them (``idp_service/directory/sessions.py``) sit below the console, so SCIM
and the device state machine need not reach up into it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, utcnow


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
