"""The overview page: devices by state, failing checks, the approval queue."""

from __future__ import annotations

from flask import render_template

from idp_service.admin import queries
from idp_service.admin.blueprint import bp
from idp_service.context import ctx


@bp.get("/")
def overview() -> str:
    """Counts by state, the checks failing on most devices, the newest pending devices."""
    with ctx().db.session() as s:
        counts = queries.state_counts(s)
        failing = queries.failing_checks(s)
        pending, more = queries.search_devices(s, queries.DeviceFilter(state="pending"), limit=10)
        review = queries.review_count(s)
    return render_template(
        "admin/overview.html",
        counts=counts,
        failing=failing,
        pending=pending,
        more=more,
        review=review,
    )
