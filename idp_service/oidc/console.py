"""The console's OpenID Connect page (``/admin/oidc-clients``): the clients, add one, enable or
disable it, rotate its secret, remove it.

Routes go on the console's blueprint (its sign-in gate, CSRF check and headers
apply); :func:`declare` adds them, and the page's entry in the console's
navigation, before the app factory mounts the console. A new secret is shown
once, on the page that answers the POST. Every change goes through
:mod:`idp_service.oidc.clients` (the checks and audit of the CLI and the API).
"""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request
from werkzeug.wrappers import Response

from idp_service.admin import blueprint as console
from idp_service.admin.auth import current_admin
from idp_service.oidc import clients
from idp_service.platform.errors import Invalid, Unauthenticated
from idp_service.web.context import ctx

ENDPOINT = "admin.oidc_clients"
_declared = False


def _actor() -> str:
    """The signed-in administrator (the console's gate let only them through)."""
    admin = current_admin()
    if admin is None:
        raise Unauthenticated("admin_signin_required", "Sign in to the console first.")
    return admin.actor


def _page(**extra: Any) -> str:
    svc = ctx()
    issuer = svc.settings.public_url.rstrip("/") + "/oidc"
    return render_template(
        "admin/oidc_clients.html",
        clients=clients.list_json(svc.db),
        discovery=issuer + "/.well-known/openid-configuration",
        modes=clients.MODES,
        auth_methods=clients.AUTH_METHODS,
        **extra,
    )


def page() -> str:
    """Every client, and the form to add one."""
    return _page()


def add() -> str:
    """Add a client from the form; the answer shows its secret once."""
    form = request.form
    uris = [u.strip() for u in (form.get("redirect_uris") or "").splitlines() if u.strip()]
    body: dict[str, Any] = {
        "name": (form.get("name") or "").strip(),
        "mode": form.get("mode") or "app",
        "token_auth_method": form.get("token_auth_method") or "client_secret_basic",
        "redirect_uris": uris,
    }
    for key in ("eam_tenant_id", "eam_jwks_url"):
        value = (form.get(key) or "").strip()
        if value:
            body[key] = value
    data = clients.add_json(ctx().db, body, actor=_actor())
    return _page(new_secret=data if data.get("client_secret") else None, added=data["client_id"])


def enabled(client_id: str) -> Response:
    """Enable or disable a client."""
    value = request.form.get("enabled")
    if value not in ("true", "false"):
        raise Invalid("bad_enabled", "enabled is true or false")
    clients.update_json(ctx().db, client_id, {"enabled": value == "true"}, actor=_actor())
    return redirect("/admin/oidc-clients", 303)


def rotate(client_id: str) -> str:
    """A new secret for a confidential client, shown once."""
    data = clients.update_json(ctx().db, client_id, {}, rotate_secret=True, actor=_actor())
    if not data.get("client_secret"):
        raise Invalid("no_secret", "this client authenticates without a secret")
    return _page(new_secret=data)


def remove(client_id: str) -> Response:
    """Remove a client."""
    clients.remove_json(ctx().db, client_id, actor=_actor())
    return redirect("/admin/oidc-clients", 303)


def declare() -> None:
    """Add the page's routes and navigation entry to the console (once per process)."""
    global _declared  # noqa: PLW0603 - the console's blueprint is one per process too
    if _declared:
        return
    _declared = True
    bp = console.bp
    bp.add_url_rule("/oidc-clients", "oidc_clients", page, methods=["GET"])
    bp.add_url_rule("/oidc-clients", "oidc_client_add", add, methods=["POST"])
    bp.add_url_rule(
        "/oidc-clients/<client_id>/enabled", "oidc_client_enabled", enabled, methods=["POST"]
    )
    bp.add_url_rule(
        "/oidc-clients/<client_id>/rotate", "oidc_client_rotate", rotate, methods=["POST"]
    )
    bp.add_url_rule(
        "/oidc-clients/<client_id>/delete", "oidc_client_delete", remove, methods=["POST"]
    )
    names = [name for name, _ in console.NAV]
    if ENDPOINT not in names:
        at = names.index("admin.sps") + 1 if "admin.sps" in names else len(names)
        console.NAV.insert(at, (ENDPOINT, "OIDC"))
