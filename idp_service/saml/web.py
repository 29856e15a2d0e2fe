"""HTTP endpoints of the IdP: ``/saml/metadata``, ``/saml/sso`` (GET and POST) and
``/saml/idp-initiated``.

A request that cannot be trusted enough to answer the SP (unknown SP, bad
signature, wrong Destination, unknown ACS, malformed, replayed ...) gets an
error page with a stable code; one whose ACS is trusted but which asks for
something we will not do gets a SAML status Response at that ACS. Either way
nothing is written but an audit event. An accepted request starts a login
transaction and sends the browser to the login page. What a request leads to is
decided in ``saml/service.py``; this module reads HTTP and renders.

:func:`init_app` registers these endpoints and the ``saml`` completer: once the
sign-in is finished, :func:`complete_login` asks ``saml/completer.py`` for the
one Response the transaction is allowed and renders its outcome (``saml/pages.py``).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, redirect, request

from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.saml import completer, pages, service
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_request, metadata
from idp_service.services import Services
from idp_service.signin import web as login
from idp_service.web.context import ctx

bp = Blueprint("saml", __name__, url_prefix="/saml")


def init_app(app: Flask, services: Services) -> None:
    """Serve ``/saml`` and finish SAML sign-ins (the ``saml`` completer)."""
    services.completers.register("saml", complete_login)
    app.register_blueprint(bp)


def complete_login(txn: LoginTransaction, user: User | None, device: Device | None) -> Response:
    """The ``saml`` completer: the Response this transaction is allowed, as a page."""
    return render(completer.complete(ctx(), txn, user, device))


def render(outcome: completer.Outcome) -> Response:
    """The page for a completer's outcome: auto-POST form, refusal page or error page."""
    if outcome.kind == "post":
        return pages.post_form(
            outcome.acs_url, outcome.saml_response, outcome.relay_state, outcome.sp_name
        )
    if outcome.kind == "refused":
        return pages.refused(
            acs_url=outcome.acs_url,
            saml_response=outcome.saml_response,
            relay_state=outcome.relay_state,
            sp_name=outcome.sp_name,
            code=outcome.code,
            message=outcome.message,
            hint=outcome.hint,
        )
    assert outcome.error is not None  # an "error" outcome carries its error
    return pages.error(outcome.error)


@bp.get("/metadata")
def idp_metadata() -> Response:
    """The IdP's metadata; ``?key_type=ec`` lists only the ECDSA certificates."""
    svc = ctx()
    ring = service.keys(svc)
    key_type = request.args.get("key_type")
    if key_type in ("rsa", "ec"):
        published = [k for k in ring.published(("rsa", key_type)) if k.key_type == key_type]
    else:
        published = ring.published()
    body = metadata.build(svc.settings.public_url, published)
    return Response(body, mimetype="application/samlmetadata+xml")


def _reject(exc: SamlError, sp_hint: str | None, binding: str) -> Response:
    service.reject(ctx(), exc, sp_hint=sp_hint, binding=binding, remote_addr=request.remote_addr)
    return pages.error(exc)


def _status_reply(exc: SamlError, accepted: authn_request.Accepted) -> Response:
    """Answer the SP (its ACS is trusted by now) with a SAML status instead of an assertion."""
    encoded = service.status_response(ctx(), exc, accepted, remote_addr=request.remote_addr)
    return pages.refused(
        acs_url=accepted.acs_url,
        saml_response=encoded,
        relay_state=accepted.relay_state,
        sp_name=accepted.sp_name,
        code=exc.code,
        message=exc.message,
        hint=exc.hint,
        status=400,
    )


@bp.route("/sso", methods=["GET", "POST"])
def sso() -> Response:
    """SP-initiated SSO on the HTTP-Redirect (GET) and HTTP-POST bindings."""
    binding = "redirect" if request.method == "GET" else "post"
    try:
        if request.method == "GET":
            incoming = authn_request.read_redirect(request.query_string)
        else:
            length = request.content_length
            if length is None:
                raise SamlError("saml_malformed", "the POST body needs a Content-Length")
            if length > authn_request.MAX_POST_BODY:
                raise SamlError("saml_too_large", "POST body too large", status=413)
            form = request.form
            for key in ("SAMLRequest", "RelayState"):  # as read_redirect: one copy of each
                if len(form.getlist(key)) > 1:
                    raise SamlError("saml_malformed", f"{key} appears twice")
            incoming = authn_request.read_post(form.get("SAMLRequest"), form.get("RelayState"))
    except SamlError as exc:
        return _reject(exc, None, binding)
    # A refusal writes nothing but its audit event (service.start_sso).
    started = service.start_sso(ctx(), incoming)
    if started.error is not None:
        exc = started.error
        if exc.saml_status is not None and started.accepted is not None:
            return _status_reply(exc, started.accepted)
        return _reject(exc, started.issuer, binding)
    assert started.txn_id is not None  # a start without an error has its transaction
    if request.method == "POST":
        # An SP's auto-POST is cross-site: no Lax session cookie came with it, and setting
        # one here would replace the browser's session and every sign-in it holds.
        return redirect(login.claim_url(started.txn_id), 303)
    login.remember(started.txn_id)
    return redirect(f"/login/{started.txn_id}", 303)


@bp.get("/idp-initiated")
def idp_initiated() -> Response:
    """Unsolicited SSO to ``?sp=<entityID or name>`` for SPs that allow it."""
    ident = request.args.get("sp", "")
    try:
        context = service.idp_initiated_context(ctx(), ident, request.args.get("RelayState"))
    except SamlError as exc:
        return _reject(exc, ident, "idp-initiated")
    txn_id = login.start_transaction("saml", context)
    return redirect(f"/login/{txn_id}", 303)
