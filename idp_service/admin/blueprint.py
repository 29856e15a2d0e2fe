"""The console's blueprint: the sign-in gate, CSRF on every POST, headers and error pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request

from idp_service.admin.auth import check_csrf, csrf_token, current_admin, safe_path
from idp_service.platform import audit
from idp_service.platform.errors import Invalid, ServiceError, Unauthenticated
from idp_service.platform.models import utcnow
from idp_service.web.context import ctx
from idp_service.web.errors import status_of
from posture_checks.evaluator import Status
from trust_protocol.durations import format_duration

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Endpoints reachable without an admin session (their POSTs still need the CSRF token).
PUBLIC = {"admin.signin", "admin.signin_start", "admin.bootstrap_form", "admin.bootstrap_redeem"}

NAV = [
    ("admin.overview", "Overview"),
    ("admin.devices", "Devices"),
    ("admin.pending", "Pending"),
    ("admin.users", "Users"),
    ("admin.groups", "Groups"),
    ("admin.sps", "SPs"),
    ("admin.checks", "Checks"),
    ("admin.audit_log", "Audit log"),
    ("admin.webhooks", "Webhooks"),
    ("admin.settings", "Settings"),
]


@bp.before_request
def _gate() -> Response | None:
    if request.method == "POST":
        check_csrf()
    if request.endpoint in PUBLIC:
        return None
    if current_admin() is None:
        if request.method == "GET":
            return redirect("/admin/signin", 303)
        raise Unauthenticated("admin_signin_required", "Sign in to the console first.")
    _refuse_unstorable_input()
    return None


def _refuse_unstorable_input() -> None:
    """Refuse (400 ``bad_input``) a path, query or form value holding a NUL character.

    No console value may hold one, and PostgreSQL cannot even compare one: left to the
    handlers, ``?q=%00`` or a NUL in a form field would fail in the database (500).
    """
    values = [request.path]
    for multi in (request.args, request.form):
        for key, items in multi.lists():
            values.append(key)
            values.extend(items)
    if any("\x00" in value for value in values):
        raise Invalid("bad_input", "The request holds a NUL character.")


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return resp


@bp.app_template_global("admin_csrf")
def _csrf() -> str:
    return csrf_token()


@bp.app_template_filter("duration")
def _duration(value: Any) -> str:
    """``{{ x|duration }}``: a timedelta or seconds as ``24 h``, ``7 d``, ``1 d 6 h``."""
    return format_duration(value)


@bp.app_template_filter("from_now")
def _from_now(value: dt.datetime | None) -> str:
    """``{{ t|from_now }}``: ``in 8 min`` or ``3 d 2 h ago`` (to the minute, seconds under two)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    seconds = int((value - utcnow()).total_seconds())
    if abs(seconds) >= 120:
        seconds = round(seconds / 60) * 60
    text = format_duration(abs(seconds))
    return f"in {text}" if seconds >= 0 else f"{text} ago"


@bp.app_template_filter("status_class")
def _status_class(value: str) -> str:
    """``{{ r.status|status_class }}``: a stored check status as its pill class (``fail``)."""
    try:
        return Status(value).css
    except ValueError:
        return "unknown"


@bp.context_processor
def _context() -> dict[str, Any]:
    return {"admin": current_admin(), "nav": NAV}


@bp.errorhandler(ServiceError)
def _error(exc: ServiceError) -> tuple[str, int]:
    if request.method == "POST" and exc.code != "csrf_invalid":
        admin = current_admin()
        audit.record_separately(
            ctx().db,
            "admin.request",
            "rejected",
            code=exc.code,
            actor=admin.actor if admin else None,
            remote_addr=request.remote_addr,
            details={"path": safe_path()},
        )
    return render_template("admin/error.html", error=exc), status_of(exc)


def reason_from_form() -> str:
    """The mandatory ``reason`` of an action (400 ``reason_required`` when empty)."""
    reason = (request.form.get("reason") or "").strip()
    if not reason:
        raise Invalid("reason_required", "Every admin action needs a reason.")
    if len(reason) > 1000:
        raise Invalid("reason_too_long", "Keep the reason under 1000 characters.")
    return reason
