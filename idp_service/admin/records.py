"""The audit log (paged by id, filtered by action, device or user) and the settings view."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from flask import render_template, request
from sqlalchemy.engine import make_url

from idp_service.admin import queries
from idp_service.admin.blueprint import bp
from idp_service.platform.config import Settings
from idp_service.web.context import ctx
from trust_protocol.durations import format_duration

HIDDEN = "(set, hidden)"
# Settings held in seconds: shown as people write durations (24 h, 30 d).
DURATIONS = {
    "challenge_ttl",
    "max_clock_skew",
    "login_ttl",
    "enroll_code_ttl",
    "approval_code_ttl",
    "approval_poll_skew",
    "report_interval",
    "admin_session_ttl",
    "concurrent_window",
    "stale_after",
    "stale_sweep_interval",
    "webhook_retry_delays",
    "webhook_timeout",
    "webhook_poll",
}


def redacted(settings: Settings) -> list[tuple[str, Any]]:
    """Every setting as ``(name, shown value)``, with secrets hidden."""
    shown: list[tuple[str, Any]] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "secret_key":
            value = HIDDEN if value else "(from the database)"
        elif f.name == "database_url":
            value = make_url(value).render_as_string(hide_password=True)
        elif f.name == "ratelimit_storage":  # a redis:// URL may carry a password
            value = re.sub(r"//[^@/]*@", "//(hidden)@", value)
        elif f.name == "osquery_queries":
            value = ", ".join(sorted(value)) or "none"
        elif f.name in DURATIONS and isinstance(value, tuple):
            value = ", ".join(map(format_duration, value)) or "none"
        elif f.name in DURATIONS:
            value = format_duration(value)
        elif isinstance(value, tuple):
            value = " ".join(map(str, value)) or "none"
        shown.append((f.name, value))
    return shown


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
    from idp_service.admin.policies import listing
    from idp_service.devices.registration_policy import POLICIES

    return render_template(
        "admin/settings.html",
        settings=redacted(ctx().settings),
        policies=listing(),
        policy_names=POLICIES,
    )
