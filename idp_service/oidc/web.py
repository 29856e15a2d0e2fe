"""HTTP endpoints of the OpenID Connect provider, under ``/oidc``.

``/.well-known/openid-configuration``, ``/jwks``, ``/authorize`` (GET and form
POST), ``/token``, ``/userinfo`` and ``/logout``. Handlers read the request
(form bodies through the one bounded reader, ``web/bodies.py``), call
``oidc/service.py`` and render. A refused request writes nothing but its audit
event; before the client and its exact redirect URI are known good the browser
gets an error page, after that the OAuth error goes back to the client.

:func:`init_app` registers the blueprint and the ``oidc`` completer, whose
outcome (``oidc/completer.py``) :func:`render` turns into a redirect, an
auto-POST form or a refusal page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
)
from werkzeug.wrappers import Response as BaseResponse

from idp_service.oidc import api as admin_api
from idp_service.oidc import completer, console, service
from idp_service.oidc.eam import HintKeys
from idp_service.oidc.errors import OidcError
from idp_service.oidc.keys import KeyRing
from idp_service.platform import audit
from idp_service.platform.errors import ServiceError
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.services import Services
from idp_service.signin import web as login
from idp_service.web.bodies import read_body
from idp_service.web.context import ctx
from idp_service.web.headers import page_policy

bp = Blueprint("oidc", __name__, url_prefix="/oidc")

MAX_FORM = 32 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def init_app(app: Flask, services: Services) -> None:
    """Serve ``/oidc`` and finish OpenID Connect sign-ins (the ``oidc`` completer)."""
    services.oidc_keys = KeyRing(services.db)  # reads nothing until first used
    services.oidc_hint_keys = HintKeys()
    services.completers.register("oidc", complete_login)
    admin_api.declare()  # /api/v1/oidc-clients, before the app registers the admin API
    console.declare()  # /admin/oidc-clients, before the app mounts the console
    app.register_blueprint(bp)


def complete_login(txn: LoginTransaction, user: User | None, device: Device | None) -> BaseResponse:
    """The ``oidc`` completer: the answer this transaction is allowed, as a response."""
    return render(completer.complete(ctx(), txn, user, device))


def _no_store(resp: BaseResponse, *, to_client: bool = False) -> BaseResponse:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if to_client:  # its form goes to the client's redirect URI
        resp.headers["Content-Security-Policy"] = page_policy((), form_action=False)
    return resp


def render(outcome: completer.Outcome) -> BaseResponse:
    """The response for a completer's outcome."""
    if outcome.kind == "redirect":
        return _no_store(redirect(outcome.url, 303))
    if outcome.kind == "post":
        page = render_template(
            "oidc/post.html",
            url=outcome.url,
            fields=outcome.fields,
            client_name=outcome.client_name,
        )
        return _no_store(make_response(page), to_client=True)
    if outcome.kind == "refused":
        page = render_template(
            "oidc/refused.html",
            url=outcome.url,
            fields=outcome.fields,
            method=outcome.method,
            client_name=outcome.client_name,
            code=outcome.code,
            message=outcome.message,
            hint=outcome.hint,
        )
        return _no_store(make_response(page, 403), to_client=True)
    code = outcome.code or "oidc_login_finished"
    return _error_page(OidcError(code, status=409 if code == "oidc_login_finished" else 403))


def _error_page(exc: OidcError) -> BaseResponse:
    page = render_template("oidc/error.html", code=exc.code, message=exc.message, hint=exc.hint)
    return _no_store(make_response(page, exc.status))


def _form() -> dict[str, list[str]]:
    """The request's urlencoded form, bounded and strict; OidcError if refused."""
    mimetype = (request.mimetype or "").lower()
    if mimetype != FORM_TYPE:
        raise OidcError("oidc_malformed", f"send {FORM_TYPE}", status=400)
    try:
        data = read_body(MAX_FORM, required=False)
    except ServiceError as exc:
        code = "oidc_too_large" if exc.code == "too_large" else "oidc_malformed"
        raise OidcError(
            code, exc.message, status=413 if code == "oidc_too_large" else 400
        ) from None
    return _parse(data.decode("utf-8", "strict") if _utf8(data) else None)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8", "strict")
    except UnicodeDecodeError:
        return False
    return True


def _parse(text: str | None) -> dict[str, list[str]]:
    if text is None:
        raise OidcError("oidc_malformed", "the form is not UTF-8")
    try:
        return parse_qs(
            text,
            keep_blank_values=False,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (ValueError, UnicodeDecodeError):
        raise OidcError("oidc_malformed", "unreadable form") from None


def _query() -> dict[str, list[str]]:
    if len(request.query_string) > MAX_FORM:
        raise OidcError("oidc_too_large", "the query is too long", status=414)
    try:
        text = request.query_string.decode("ascii")
    except UnicodeDecodeError:
        raise OidcError("oidc_malformed", "the query is not ASCII") from None
    return _parse(text)


def _audit(action: str, exc: OidcError, details: dict[str, Any]) -> None:
    audit.record_separately(
        ctx().db,
        action,
        "rejected",
        code=exc.code,
        remote_addr=request.remote_addr,
        details=details,
    )


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """The provider's metadata."""
    resp = jsonify(service.discovery(ctx()))
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


@bp.get("/jwks")
def jwks() -> Response:
    """The published signing keys (active, next, previous), each with ``x5c``."""
    resp = jsonify(service.keys(ctx()).jwks())
    resp.headers["Cache-Control"] = "public, max-age=600"
    return resp


def _error_reply(exc: OidcError, reply: service.Reply) -> BaseResponse:
    """An authorize refusal: back to the client when that is safe, else an error page."""
    if not exc.redirect or reply.redirect_uri is None:
        return _error_page(exc)
    fields = {"error": exc.error, "error_description": exc.code}
    if reply.state is not None:
        fields["state"] = reply.state
    if reply.response_mode == "form_post":
        page = render_template(
            "oidc/post.html", url=reply.redirect_uri, fields=fields, client_name=""
        )
        return _no_store(make_response(page), to_client=True)
    sep = "&" if "?" in reply.redirect_uri else "?"
    return _no_store(redirect(reply.redirect_uri + sep + urlencode(fields), 303))


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> BaseResponse:
    """Start an OpenID Connect sign-in: check the request, then the login page."""
    reply = service.Reply()
    client_id: str | None = None
    try:
        params = _query() if request.method == "GET" else _form()
        client_id = (params.get("client_id") or [""])[0][:128] or None
        accepted = service.check_authorize(ctx(), params, reply)
    except OidcError as exc:
        _audit("oidc.authorize", exc, {"client_id": client_id, "method": request.method})
        return _error_reply(exc, reply)
    if request.method == "POST":
        # A form POST from the client's site carries no Lax session cookie: setting one
        # here would replace the browser's session (signin/web.py, claim_url).
        return _no_store(redirect(login.start_cross_site("oidc", accepted.context), 303))
    txn_id = login.start_transaction("oidc", accepted.context)
    return _no_store(redirect(f"/login/{txn_id}", 303))


def _oauth_error(exc: OidcError) -> BaseResponse:
    body = {"error": exc.error, "error_description": exc.message, "code": exc.code}
    resp = make_response(jsonify(body), exc.status)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = (
            'Bearer error="invalid_token"'
            if exc.error == "invalid_token"
            else 'Basic realm="devicetrust"'
        )
    return _no_store(resp)


@bp.post("/token")
def token() -> BaseResponse:
    """Redeem an authorization code (PKCE S256) for an id_token and an access token."""
    try:
        form = _form()
        auth = service.ClientAuth(
            basic=service.parse_basic(request.headers.get("Authorization")),
            client_id=_first(form, "client_id"),
            client_secret=_first(form, "client_secret"),
            assertion_type=_first(form, "client_assertion_type"),
            assertion=_first(form, "client_assertion"),
        )
        body = service.token(ctx(), form, auth, request.remote_addr)
    except OidcError as exc:
        if exc.code not in ("oidc_code_reused", "oidc_invalid_grant", "oidc_pkce_mismatch"):
            _audit("oidc.token", exc, {})  # the redemption's own refusals audit themselves
        return _oauth_error(exc)
    return _no_store(jsonify(body))


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1 or len(values[0]) > 8192:
        raise OidcError("oidc_malformed", f"{name} is repeated or too long")
    return values[0]


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> BaseResponse:
    """The signed-in user's claims, for a live access token."""
    try:
        claims = service.userinfo(ctx(), request.headers.get("Authorization"))
    except OidcError as exc:
        _audit("oidc.userinfo", exc, {})
        return _oauth_error(exc)
    return _no_store(jsonify(claims))


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> BaseResponse:
    """RP-initiated logout: revoke the client's tokens of the user, then back to the client."""
    try:
        params = _query() if request.method == "GET" else _form()
        target = service.logout(ctx(), params)
    except OidcError as exc:
        _audit("oidc.logout", exc, {})
        return _error_page(exc)
    if target is not None:
        return _no_store(redirect(target, 303))
    return _no_store(make_response(render_template("oidc/logged_out.html")))
