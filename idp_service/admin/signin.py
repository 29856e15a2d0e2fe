"""Console sign-in pages: through device trust, by bootstrap token, and sign-out."""

from __future__ import annotations

from flask import Response, redirect, render_template, request

from idp_service.admin import bootstrap
from idp_service.admin.auth import Admin, current_admin, end_session, open_session
from idp_service.admin.blueprint import bp
from idp_service.platform import audit
from idp_service.signin.web import start_transaction
from idp_service.upstream import web as upstream_web
from idp_service.web.context import ctx


@bp.get("/signin")
def signin() -> str | Response:
    """The sign-in page: one button that runs the employee device check."""
    if current_admin() is not None:
        return redirect("/admin/", 303)
    return render_template("admin/signin.html", group=ctx().settings.admin_group)


@bp.post("/signin")
def signin_start() -> Response:
    """Start a device-trust login transaction whose completer is the console.

    With an upstream IdP marked ``console = true`` (docs/oidc.md), the person signs in
    there first; the device check follows, and the console requires both.
    """
    txn_id = start_transaction("admin")
    idp = upstream_web.registry().console_idp()
    if idp is not None:
        return redirect(f"/upstream/{idp}/start?txn={txn_id}&purpose=admin", 303)
    return redirect(f"/login/{txn_id}", 303)


@bp.get("/bootstrap")
def bootstrap_form() -> str:
    """The form that takes a token from ``devicetrust admin bootstrap``."""
    return render_template("admin/bootstrap.html")


@bp.post("/bootstrap")
def bootstrap_redeem() -> Response | tuple[str, int]:
    """Open one console session with a bootstrap token (single use, 1 h)."""
    token = request.form.get("token", "").strip()
    svc = ctx()
    with svc.db.session() as s:
        used = bootstrap.redeem(s, token)
        audit.record(
            s,
            "admin.bootstrap",
            "ok" if used else "denied",
            code=None if used else "bootstrap_token_invalid",
            actor="admin:bootstrap",
            remote_addr=request.remote_addr,
            details={"token_id": used} if used else None,
        )
    if used is None:
        page = render_template(
            "admin/bootstrap.html", error="This token is unknown, expired or already used."
        )
        return page, 403
    open_session(Admin(user_name="bootstrap", via="bootstrap"))
    return redirect("/admin/", 303)


@bp.post("/signout")
def signout() -> Response:
    """End the console session."""
    admin = current_admin()
    if admin is not None:
        audit.record_separately(
            ctx().db, "admin.signout", "ok", actor=admin.actor, remote_addr=request.remote_addr
        )
    end_session("signout")
    return redirect("/admin/signin", 303)
