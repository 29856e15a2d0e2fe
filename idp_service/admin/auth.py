"""Who may use the console: admin sessions, CSRF tokens, and signing in through device trust.

* **Sign-in** starts an ordinary login transaction of kind ``admin``; the
  employee login page verifies the device, and :func:`complete_login` (the
  ``admin`` completer) opens a session only for a verified device whose owner
  is in ``DEVICETRUST_ADMIN_GROUP``. A bootstrap token opens one session too.
* **Sessions** are ``admin_sessions`` rows (:mod:`idp_service.admin.sessions`);
  the signed cookie (HttpOnly, SameSite=Lax, ``__Host-`` and Secure on https)
  holds only the row's secret. Each request reads the row and re-reads the
  user, the group membership and the device; a failed recheck, sign-out, a
  SCIM deactivation or a device revocation ends the row, so a copied cookie
  is worth nothing afterwards.
* **CSRF**: a random per-session token, compared in constant time on every
  POST; a refusal writes nothing but an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, g, make_response, redirect, render_template, request, session

from idp_service.admin import sessions as admin_sessions
from idp_service.platform import audit
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.signin.messages import MESSAGES
from idp_service.signin.web import remember
from idp_service.upstream import service as upstream_service
from idp_service.upstream import web as upstream_web
from idp_service.web.context import ctx
from idp_service.web.csrf import CsrfGuard

SESSION_KEY = "admin"
CONSOLE_CSRF = CsrfGuard("admin_csrf", "This form is stale or did not come from the console.")


@dataclass(frozen=True)
class Admin:
    """The signed-in administrator."""

    user_name: str
    via: str  # "device" or "bootstrap"
    user_id: str | None = None
    device_id: str | None = None
    session_id: str | None = None  # the admin_sessions row of this browser

    @property
    def actor(self) -> str:
        """How audit events name this admin."""
        return f"admin:{self.user_name}"


def csrf_token() -> str:
    """This browser's console CSRF token (made on first use)."""
    return CONSOLE_CSRF.token()


def safe_path() -> str:
    """This request's path for the audit log: at most 300 printable characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in request.path[:300])


def check_csrf() -> None:
    """Refuse (403 ``csrf_invalid``) a POST without this session's token, or from elsewhere.

    The refusal is audited (``admin.csrf``) and writes nothing else.
    """

    def audit_refusal() -> None:
        admin = current_admin()
        audit.record_separately(
            ctx().db,
            "admin.csrf",
            "rejected",
            code="csrf_invalid",
            actor=admin.actor if admin is not None else None,
            remote_addr=request.remote_addr,
            details={"path": safe_path()},
        )

    CONSOLE_CSRF.check(on_refusal=audit_refusal)


def open_session(admin: Admin) -> None:
    """Start a fresh console session: a new server-side row, cookie content and CSRF token.

    The browser's whole Flask session is cleared first (a privilege change rotates
    everything the cookie held, including the login transactions it owned).
    """
    svc = ctx()
    old = session.get(SESSION_KEY)
    with svc.db.session() as s:
        if isinstance(old, dict) and isinstance(old.get("sid"), str):
            admin_sessions.end(s, old["sid"], "replaced")
        secret = admin_sessions.open_row(
            s,
            via=admin.via,
            user_name=admin.user_name,
            user_id=admin.user_id,
            device_id=admin.device_id,
            ttl_seconds=svc.settings.admin_session_ttl,
        )
    session.clear()
    session[SESSION_KEY] = {"sid": secret}
    CONSOLE_CSRF.renew()


def end_session(reason: str) -> None:
    """End this browser's console session on the server, and forget it in the cookie."""
    data = session.get(SESSION_KEY)
    if isinstance(data, dict) and isinstance(data.get("sid"), str):
        with ctx().db.session() as s:
            admin_sessions.end(s, data["sid"], reason)
    session.clear()


def current_admin() -> Admin | None:
    """The admin of this request, rechecked against the database; None when signed out."""
    if "admin_user" in g:
        return g.admin_user
    g.admin_user = admin = _load()
    if admin is None and SESSION_KEY in session:
        session.pop(SESSION_KEY, None)
    return admin


def _load() -> Admin | None:
    """The session's row, live, and (for a device session) its user, device and group now.

    A failed recheck ends the row, so a session once refused stays ended even if
    the fact that refused it (group membership, device state) is restored later.
    """
    data = session.get(SESSION_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        return None
    with ctx().db.session() as s:
        row = admin_sessions.live(s, data["sid"])
        if row is None:
            return None
        admin = Admin(
            user_name=row.user_name,
            via=row.via,
            user_id=row.user_id,
            device_id=row.device_id,
            session_id=row.id,
        )
        reason = admin_sessions.recheck(s, row, ctx().settings.admin_group)
        if reason is not None:
            admin_sessions.end(s, data["sid"], reason)
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
        code = admin_sessions.finish_login(
            s,
            txn,
            user,
            device,
            admin_group=svc.settings.admin_group,
            remote_addr=request.remote_addr,
            upstream_proved=(
                None
                if upstream_web.registry().console_idp() is None
                else lambda user_id: upstream_service.proved_in(svc, txn.id, "admin", user_id)
            ),
        )
    if code is None:
        open_session(Admin(user.user_name, "device", user.id, device.id))
        remember(txn.id)  # so that a repeated /continue finds it and goes to the console
        return redirect("/admin/", 303)
    message = {
        "not_admin": "Your account is not an administrator of this console.",
        "login_finished": "This sign-in was already used. Start again.",
        "upstream_required": "Sign in to the console with your organization's identity "
        "provider, as the owner of this device. Start again.",
    }.get(code) or MESSAGES.get(code, "The device check failed.")
    page = render_template("admin/refused.html", code=code, message=message)
    return make_response(page, 403)
