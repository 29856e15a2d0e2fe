"""Checks in force (mode, devices passing, failing, stale ...) and their exemptions."""

from __future__ import annotations

import datetime as dt

from flask import Response, redirect, render_template, request

from idp_service.admin.auth import current_admin
from idp_service.admin.blueprint import bp, reason_from_form
from idp_service.platform.errors import Invalid
from idp_service.platform.models import utcnow
from idp_service.posture import queries as posture_queries
from idp_service.posture import service as posture
from idp_service.web.context import ctx
from posture_checks.evaluator import Status

# The statuses the checks page counts, in the order an admin reads them.
COLUMNS = (Status.FAIL, Status.STALE, Status.PASS, Status.UNKNOWN, Status.ERROR)


@bp.get("/checks")
def checks() -> str:
    """The checks in force now with how many devices are in each status, and exemptions.

    The counts come from the results stored at each device's last report, in one
    grouped query; each links to the devices list filtered by check and status.
    """
    service = ctx()
    in_force = service.posture.checks() if service.posture is not None else []
    with service.db.session() as s:
        counts = posture_queries.check_status_counts(s)
        rows = posture_queries.exemptions(s, limit=500)
    return render_template(
        "admin/checks.html",
        checks=in_force,
        counts=counts,
        columns=COLUMNS,
        exemptions=rows,
    )


@bp.post("/exemptions")
def exemption_add() -> Response:
    """Exempt a device, user or group from a check for some days."""
    reason = reason_from_form()
    form = request.form
    days = form.get("days", "")
    if not (days.isascii() and days.isdigit()) or not 1 <= int(days) <= 365:
        raise Invalid("bad_exemption", "days must be a whole number from 1 to 365")
    with ctx().db.session() as s:
        posture.add_exemption(
            s,
            check_id=(form.get("check_id") or "").strip(),
            scope=(form.get("scope") or "").strip(),
            subject=(form.get("subject") or "").strip(),
            expires_at=utcnow() + dt.timedelta(days=int(days)),
            reason=reason,
            actor=current_admin().actor,
        )
    return redirect("/admin/checks", 303)


@bp.post("/exemptions/<int:exemption_id>/remove")
def exemption_remove(exemption_id: int) -> Response:
    """End an exemption now."""
    reason = reason_from_form()
    with ctx().db.session() as s:
        posture.remove_exemption(s, exemption_id, reason=reason, actor=current_admin().actor)
    return redirect("/admin/checks", 303)
