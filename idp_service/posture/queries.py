"""Posture reads shared by the console and the admin API: result counts and exemptions.

The checks page (``admin/checks.py``) and ``GET /api/v1/checks`` and
``/api/v1/exemptions`` (``api/posture.py``) read through these functions and build no
statement themselves. Every function takes the caller's session and commits nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp_service.platform.models import utcnow
from idp_service.posture.tables import CheckResultRow, ExemptionRow


def check_status_counts(session: Session) -> dict[str, dict[str, int]]:
    """``{check_id: {status: devices}}`` from the stored results: one grouped query."""
    out: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(CheckResultRow.check_id, CheckResultRow.status, func.count()).group_by(
            CheckResultRow.check_id, CheckResultRow.status
        )
    )
    for check_id, status, n in rows:
        out.setdefault(check_id, {})[status] = int(n)
    return out


def exemptions(
    session: Session,
    *,
    active_only: bool = True,
    limit: int | None = None,
    now: dt.datetime | None = None,
) -> list[ExemptionRow]:
    """Exemptions, soonest expiry first: the ones still in force at ``now`` unless
    ``active_only`` is False; at most ``limit`` (all with None)."""
    stmt = select(ExemptionRow).order_by(ExemptionRow.expires_at, ExemptionRow.id)
    if active_only:
        stmt = stmt.where(ExemptionRow.expires_at > (now or utcnow()))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


__all__ = ["check_status_counts", "exemptions"]
