"""The overview page: devices by state, failing checks, the approval queue."""

from __future__ import annotations

from flask import Response, redirect, render_template, request

from idp_service.admin import queries
from idp_service.admin import sessions as admin_sessions
from idp_service.admin.auth import current_admin
from idp_service.admin.blueprint import bp
from idp_service.devices import queries as device_queries
from idp_service.platform import audit
from idp_service.web.context import ctx


@bp.get("/")
def overview() -> str:
    """Counts by state, the checks failing on most devices, the newest pending devices."""
    with ctx().db.session() as s:
        counts = device_queries.state_counts(s)
        failing = queries.failing_checks(s)
        pending, more = queries.search_devices(s, queries.DeviceFilter(state="pending"), limit=10)
        review = device_queries.review_count(s)
        admin = current_admin()
        elsewhere = (
            admin_sessions.others(s, admin.user_id, admin.session_id)
            if admin is not None and admin.user_id and admin.session_id
            else []
        )
    return render_template(
        "admin/overview.html",
        counts=counts,
        failing=failing,
        pending=pending,
        more=more,
        review=review,
        elsewhere=elsewhere,
    )


@bp.post("/sessions/end-others")
def end_other_sessions() -> Response:
    """End the admin's console sessions in every other browser."""
    admin = current_admin()
    if admin is not None and admin.user_id and admin.session_id:
        with ctx().db.session() as s:
            ended = admin_sessions.end_others(s, admin.user_id, admin.session_id)
            audit.record(
                s,
                "admin.sessions_end",
                "ok",
                actor=admin.actor,
                user_id=admin.user_id,
                remote_addr=request.remote_addr,
                details={"ended": ended},
            )
    return redirect("/admin/", 303)
