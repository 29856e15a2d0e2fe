"""Detection's flags as the console and the admin API read them.

:mod:`idp_service.devices.detection` writes flags (clone, duplicate hardware, concurrent
agents, staleness); this module is what handlers use to name their kinds and to show a
device's flags, so that no handler reaches the flag table itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from idp_service.devices import queries as device_queries
from idp_service.devices.detection import flag_json
from idp_service.devices.flag_tables import FLAG_KINDS


def flags_json(
    session: Session, device_id: str, *, limit: int | None = 100
) -> list[dict[str, Any]]:
    """The device's flags, newest first, as the API shows them (at most ``limit``)."""
    return [flag_json(f) for f in device_queries.flags(session, device_id, limit=limit)]


__all__ = ["FLAG_KINDS", "flags_json"]
