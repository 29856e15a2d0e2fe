"""Storage of the admin console: sessions, one-time bootstrap tokens, the indexes its pages use.

``admin_sessions`` is defined in ``idp_service/platform/session_tables.py``
(SCIM and the device state machine end sessions without reaching up into the
console) and re-exported here.

The indexes live here (not on the models) because only the console's queries
need them; they attach to the shared tables' metadata, and revision
``0006_admin_console`` creates them. The device list is paged by keyset on
``(last_seen, id)``, optionally within one state; searches are prefix ranges on
hostname and serial (serial already has an index), failing checks are counted
by ``(status, check_id)``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp_service.platform.models import Base, Device, utcnow
from idp_service.platform.session_tables import AdminSession as AdminSession
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


Index("ix_devices_last_seen_id", Device.last_seen, Device.id)
Index("ix_devices_state_last_seen_id", Device.state, Device.last_seen, Device.id)
Index("ix_devices_platform_last_seen_id", Device.platform, Device.last_seen, Device.id)
Index("ix_devices_hostname", Device.hostname)
Index("ix_check_results_status_check_id", CheckResultRow.status, CheckResultRow.check_id)
