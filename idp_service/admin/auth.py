"""Who may use the console: admin sessions, CSRF tokens, and signing in through device trust.

* **Sign-in** starts an ordinary login transaction of kind ``admin``; the
  employee login page verifies the device, and :func:`complete_login` (the
  ``admin`` completer) opens a session only for a verified device whose owner
  is in ``DEVICETRUST_ADMIN_GROUP``. A bootstrap token opens one session too.
* **Sessions** live in Flask's signed cookie (HttpOnly, SameSite=Lax, Secure on
  https) with an expiry. Each request re-reads the user, the group membership
  and the device, so a revocation or a group change ends the session at once.
* **CSRF**: a random per-session token, compared in constant time on every
  POST; a refusal writes nothing but an audit event.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from flask import Response, g, make_response, redirect, render_template, request, session
from sqlalchemy import update
from sqlalchemy.orm import Session

from idp_service import audit
from idp_service.blueprints.login import MESSAGES, remember
from idp_service.context import ctx
from idp_service.errors import ApiError
from idp_service.storage.models import Device, LoginTransaction, User, utcnow
from scim.groups import groups_of

SESSION_KEY = "admin"
CSRF_KEY = "admin_csrf"


@dataclass(frozen=True)
class Admin:
    """The signed-in administrator."""

    user_name: str
    via: str  # "device" or "bootstrap"
    user_id: str | None = None
    device_id: str | None = None

    @property
    def actor(self) -> str:
        """How audit events name this admin."""
        return f"admin:{self.user_name}"


def csrf_token() -> str:
    """This browser's CSRF token (made on first use)."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return token


def check_csrf() -> None:
    """Refuse (403 ``csrf_invalid``) a POST without this session's token, or from elsewhere."""
    sent = request.form.get("csrf", "")
    expected = session.get(CSRF_KEY)
    origin = request.headers.get("Origin")
    ok = (
        isinstance(expected, str)
        and len(expected) >= 32
        and hmac.compare_digest(sent.encode(), expected.encode())
        and (origin is None or origin in ctx().settings.allowed_origins)
    )
    if not ok:
        admin = session.get(SESSION_KEY) or {}
        audit.record_separately(
            ctx().db,
            "admin.csrf",
            "rejected",
            code="csrf_invalid",
            actor=f"admin:{admin['user_name']}" if admin.get("user_name") else None,
            remote_addr=request.remote_addr,
            details={"path": request.path},
        )
        raise ApiError("csrf_invalid", "This form is stale or did not come from the console.", 403)


def in_admin_group(s: Session, user_id: str) -> bool:
    """True when the user is in the configured admin group (directly or nested)."""
    wanted = ctx().settings.admin_group.casefold()
    return bool(wanted) and any(name.casefold() == wanted for name in groups_of(s, user_id))


def open_session(admin: Admin) -> None:
    """Start a fresh console session (a new cookie content and CSRF token)."""
    session.clear()
    session[SESSION_KEY] = {
        "user_name": admin.user_name,
        "via": admin.via,
        "user_id": admin.user_id,
        "device_id": admin.device_id,
        "exp": int(time.time()) + ctx().settings.admin_session_ttl,
    }
    session[CSRF_KEY] = secrets.token_urlsafe(32)


def current_admin() -> Admin | None:
    """The admin of this request, rechecked against the database; None when signed out."""
    if "admin_user" in g:
        return g.admin_user
    g.admin_user = admin = _load()
    if admin is None and SESSION_KEY in session:
        session.pop(SESSION_KEY, None)
    return admin


def _load() -> Admin | None:
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
        return None
    if data["exp"] <= time.time():
        return None
    admin = Admin(
        user_name=str(data.get("user_name")),
        via=str(data.get("via")),
        user_id=data.get("user_id"),
        device_id=data.get("device_id"),
    )
    if admin.via == "bootstrap":
        return admin
    if admin.via != "device" or not admin.user_id or not admin.device_id:
        return None
    with ctx().db.session() as s:
        user = s.get(User, admin.user_id)
        device = s.get(Device, admin.device_id)
        if (
            user is None
            or not user.active
            or device is None
            or device.state != "trusted"
            or device.user_id != user.id
            or not in_admin_group(s, user.id)
        ):
            return None
    return admin


def complete_login(txn: LoginTransaction, user: User | None, device: Device | None) -> Response:
    """The ``admin`` login completer: a session for a verified admin, else a refusal page.

    A transaction opens at most one session. A repeat (the login page went to
    ``/continue`` twice, or a reload) never runs it again: the browser goes to the
    console if it is signed in already as this transaction's user, otherwise it
    gets the "already used" page.
    """
    svc = ctx()
    if txn.completed_at is not None:
        admin = current_admin()
        if admin is not None and admin.via == "device" and admin.user_id == txn.user_id:
            return redirect("/admin/", 303)
    with svc.db.session() as s:
        claimed = s.execute(
            update(LoginTransaction)
            .where(LoginTransaction.id == txn.id, LoginTransaction.completed_at.is_(None))
            .values(completed_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        code: str | None = None
        if claimed != 1:
            code = "login_finished"
        elif txn.status != "verified" or user is None or device is None:
            code = txn.error_code or "expired"
        elif not in_admin_group(s, user.id):
            code = "not_admin"
        audit.record(
            s,
            "admin.login",
            "ok" if code is None else "denied",
            code=code,
            actor=f"admin:{user.user_name}" if user is not None else None,
            user_id=txn.user_id,
            device_id=txn.device_id,
            remote_addr=request.remote_addr,
        )
    if code is None:
        open_session(Admin(user.user_name, "device", user.id, device.id))
        remember(txn.id)  # so that a repeated /continue finds it and goes to the console
        return redirect("/admin/", 303)
    message = {
        "not_admin": "Your account is not an administrator of this console.",
        "login_finished": "This sign-in was already used. Start again.",
    }.get(code) or MESSAGES.get(code, "The device check failed.")
    page = render_template("admin/refused.html", code=code, message=message)
    return make_response(page, 403)
