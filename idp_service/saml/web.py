"""HTTP endpoints of the IdP: ``/saml/metadata``, ``/saml/sso`` (GET and POST) and
``/saml/idp-initiated``.

A request that cannot be trusted enough to answer the SP (unknown SP, bad
signature, wrong Destination, unknown ACS, malformed, replayed ...) gets an
error page with a stable code; one whose ACS is trusted but which asks for
something we will not do gets a SAML status Response at that ACS. Either way
nothing is written but an audit event. An accepted request starts a login
transaction and sends the browser to the login page.

:func:`init_app` registers these endpoints and the ``saml`` completer: once the
sign-in is finished, :func:`complete_login` asks ``saml/completer.py`` for the
one Response the transaction is allowed and renders its outcome (``saml/pages.py``).
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Flask, Response, redirect, request

from idp_service.platform import audit
from idp_service.platform.models import Device, LoginTransaction, User, utcnow
from idp_service.saml import completer, pages, service
from idp_service.saml import registry as sp_registry
from idp_service.saml import store as sso_sql
from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import authn_request, metadata, response
from idp_service.saml.protocol.constants import KEY_TYPE_FOR_ALGORITHM
from idp_service.services import Services
from idp_service.signin import transactions
from idp_service.signin import web as login
from idp_service.web.context import ctx

bp = Blueprint("saml", __name__, url_prefix="/saml")

MAX_SP_PARAM = 1024


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
    svc = ctx()
    audit.record_separately(
        svc.db,
        "saml.sso",
        "rejected",
        code=exc.code,
        remote_addr=request.remote_addr,
        details={"binding": binding, "sp": (sp_hint or "")[:256] or None},
    )
    return pages.error(exc)


def _status_reply(exc: SamlError, accepted: authn_request.Accepted) -> Response:
    """Answer the SP (its ACS is trusted by now) with a SAML status instead of an assertion."""
    svc = ctx()
    sp = accepted.sp_settings
    key = service.keys(svc).active(KEY_TYPE_FOR_ALGORITHM[sp["signature_algorithm"]])
    target = response.Target(
        issuer=service.idp_entity_id(svc),
        acs_url=accepted.acs_url,
        in_response_to=accepted.request.id,
        sign_response=sp["sign_response"],
        sign_assertion=sp["sign_assertion"],
    )
    xml = response.failure(target, exc.saml_status or (), key, message=exc.code)
    audit.record_separately(
        svc.db,
        "saml.sso",
        "rejected",
        code=exc.code,
        remote_addr=request.remote_addr,
        details={
            "binding": accepted.binding,
            "sp": accepted.sp_entity_id,
            "request_id": accepted.request.id,
            **(exc.audit_details or {}),
        },
    )
    return pages.refused(
        acs_url=accepted.acs_url,
        saml_response=response.encode(xml),
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
    svc = ctx()
    binding = "redirect" if request.method == "GET" else "post"
    issuer: str | None = None
    accepted: authn_request.Accepted | None = None
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
            incoming = authn_request.read_post(form.get("SAMLRequest"), form.get("RelayState"))
        parsed = authn_request.parse(incoming.xml)
        issuer = parsed.issuer
        # Read the SP, check everything, then record the request ID as used and start the
        # login transaction in one write. A refusal writes nothing but the audit event below.
        sp = sso_sql.find_sp(svc.db.engine, parsed.issuer)
        accepted = authn_request.check(incoming, parsed, sp, sso_url=service.idp_sso_url(svc))
        authn_request.policy_check(accepted)
        txn_id = transactions.new_id()
        if not sso_sql.accept(
            svc.db.engine,
            sp_entity_id=accepted.sp_entity_id,
            request_id=accepted.request.id,
            seen_until=authn_request.seen_until(accepted),
            txn_id=txn_id,
            context={"kind": "saml", **accepted.context()},
            expires_at=utcnow() + dt.timedelta(seconds=svc.settings.login_ttl),
        ):
            raise SamlError("saml_replayed", "this request ID was already used", status=409)
    except SamlError as exc:
        if exc.saml_status is not None and accepted is not None:
            return _status_reply(exc, accepted)
        return _reject(exc, issuer, binding)
    login.remember(txn_id)
    return redirect(f"/login/{txn_id}", 303)


@bp.get("/idp-initiated")
def idp_initiated() -> Response:
    """Unsolicited SSO to ``?sp=<entityID or name>`` for SPs that allow it."""
    svc = ctx()
    ident = request.args.get("sp", "")
    relay_state = request.args.get("RelayState")
    try:
        if not ident or len(ident) > MAX_SP_PARAM:
            raise SamlError("saml_unknown_sp", "name the SP with ?sp=", status=404)
        relay_state = authn_request.check_relay_state(relay_state)
        with svc.db.session() as s:
            try:
                sp = sp_registry.get(s, ident)
            except sp_registry.RegistryError:
                raise SamlError("saml_unknown_sp", "no such SP", status=404) from None
        if not sp.enabled:
            raise SamlError("saml_sp_disabled", status=403)
        if not sp.allow_idp_initiated or sp.identity_broker:
            raise SamlError("saml_idp_initiated_disabled", status=403)
        acs_url = sp_registry.resolve_acs(sp)
    except SamlError as exc:
        return _reject(exc, ident, "idp-initiated")
    txn_id = login.start_transaction(
        "saml",
        {
            "sp": sp_registry.snapshot(sp),
            "sp_entity_id": sp.entity_id,
            "sp_name": sp.name,
            "acs_url": acs_url,
            "binding": "idp-initiated",
            "request_id": None,
            "relay_state": relay_state,
            "nameid_format": None,
            "broker_subject": None,
            "tofu_subject": None,
        },
    )
    return redirect(f"/login/{txn_id}", 303)
