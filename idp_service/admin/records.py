"""The audit log (paged by id, filtered by action, device or user) and the settings view."""

from __future__ import annotations

from flask import render_template, request

from idp_service.admin import queries
from idp_service.admin.blueprint import bp
from idp_service.admin.settings_view import redacted
from idp_service.web.context import ctx

__all__ = ["audit_log", "redacted", "settings"]


@bp.get("/audit")
def audit_log() -> str:
    """Audit events, newest first."""
    flt = queries.AuditFilter.parse(request.args)
    with ctx().db.session() as s:
        events, more = queries.audit_page(s, flt)
    return render_template("admin/audit.html", events=events, more=more, flt=flt)


@bp.get("/settings")
def settings() -> str:
    """The effective settings (read-only; change them in the environment, docs/deploy.md)."""
    from idp_service.admin.policies import listing, reauth_listing
    from idp_service.devices.registration_policy import POLICIES

    return render_template(
        "admin/settings.html",
        settings=redacted(ctx().settings),
        policies=listing(),
        reauth=reauth_listing(),
        policy_names=POLICIES,
    )
