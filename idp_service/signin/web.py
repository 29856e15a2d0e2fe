"""The login page: find the local agent, hand it a challenge, wait for a verified answer.

A sign-in is a *login transaction* (``idp_service/signin/transactions.py``). The page
asks for a challenge bound to it, offers the challenge to the agent on each of
its loopback ports, forwards the agent's answer, and polls until the
transaction is verified or denied, by whichever path the answer arrived (the
browser's fetch or the agent's direct callback). Then ``/login/<id>/continue``
asks the sign-in service (``signin/service.py``) what may happen -- its trust
recheck and posture gate decide, this module only renders -- and hands the
transaction to the surface that started it (SAML, the console, or the plain
device check) through the completer registered for its kind in
``Services.completers``.

Transactions are bound to the browser that started them by the session cookie,
so a transaction id alone is worth nothing to someone else. A session cookie
can be copied into another browser (planted), so a verified transaction is
also bound to the browser whose device answered it: ``/challenge`` sets a
holder cookie derived from the challenge it hands out, and ``/continue``
requires the holder of the challenge that was answered
(:func:`idp_service.signin.transactions.holder_secret`).

Every route of the ``login`` blueprint is declared here, the approve ceremony's
two included (their pages are in ``signin/approve_web.py``); :func:`init_app`
registers the blueprint and the ``local`` completer.
"""

from __future__ import annotations

import hmac
from typing import Any, cast

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response  # what redirect() and jsonify() both return

from idp_service.devices import challenges
from idp_service.platform.config import cookie_name
from idp_service.platform.errors import HINTS, Conflict, Invalid, NotFound, ServiceError
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.services import Services
from idp_service.signin import approve_web, authenticate, login_enroll, service, transactions
from idp_service.signin.messages import MESSAGES, message_for
from idp_service.web.bodies import json_body, read_body
from idp_service.web.context import ctx
from trust_protocol.errors import ProtocolError

bp = Blueprint("login", __name__)

MAX_TXNS_PER_SESSION = 8
MAX_ENVELOPE = 64 * 1024
MAX_HOLDERS = 8  # challenge holders a browser keeps (one cookie, about 260 bytes)


def init_app(app: Flask, services: Services) -> None:
    """Serve the login page (``/login``) and register the plain device check's completer."""
    services.completers.register("local", complete_local)
    app.register_blueprint(bp)


def _secret_key() -> str | bytes:
    """The app's SECRET_KEY (the app factory always sets one)."""
    key = current_app.secret_key
    if key is None:
        raise RuntimeError("the app has no SECRET_KEY")
    return key


def remember(txn_id: str) -> None:
    """Bind a transaction to this browser's session cookie."""
    owned = [t for t in session.get("login_txns", []) if t != txn_id]
    session["login_txns"] = (owned + [txn_id])[-MAX_TXNS_PER_SESSION:]


def claim_url(txn_id: str) -> str:
    """Where a sign-in started by a cross-site POST sends the browser: the login page, with
    the secret that adds the transaction to this browser's session on that same-site GET
    (:func:`transactions.claim_secret`; the POST's own answer must not set the session)."""
    return f"/login/{txn_id}?claim={transactions.claim_secret(_secret_key(), txn_id)}"


def start_cross_site(kind: str, context: dict[str, Any] | None = None) -> str:
    """Create a transaction for a cross-site POST (no Lax session cookie came with it) and
    return its :func:`claim_url`; the session cookie is left alone."""
    return claim_url(service.start(ctx(), kind, context))


def start_transaction(kind: str, context: dict[str, Any] | None = None) -> str:
    """Create a transaction for this browser; other surfaces (SAML, the console) call this too."""
    txn_id = service.start(ctx(), kind, context)
    remember(txn_id)
    return txn_id


def _require_owned(txn_id: str) -> None:
    """404 unless this browser's session cookie holds the transaction (no oracle for guessing)."""
    if txn_id not in session.get("login_txns", []):
        raise NotFound("login_unknown", "No such sign-in in this browser.")


def owned_transaction(txn_id: str, *, settle: bool = True) -> LoginTransaction:
    """The transaction if this browser owns it; 404 otherwise (no oracle for guessing).

    A pending one is settled unless ``settle`` is False (:func:`service.transaction`).
    """
    _require_owned(txn_id)
    txn = service.transaction(ctx(), txn_id, settle=settle)
    if txn is None:
        raise NotFound("login_unknown", "No such sign-in in this browser.")
    return txn


def owned_login(txn_id: str) -> service.Login:
    """The owned transaction with its user and device as they are now (detached
    snapshots); 404 as :func:`owned_transaction`. A pending one is settled first."""
    _require_owned(txn_id)
    found = service.login(ctx(), txn_id)
    if found is None:
        raise NotFound("login_unknown", "No such sign-in in this browser.")
    return found


@bp.get("/login")
def login_start() -> Response:
    """Start a plain device check (no SAML): useful to test an enrollment."""
    return redirect(f"/login/{start_transaction('local')}", 303)


@bp.get("/login/<txn_id>")
def login_page(txn_id: str) -> str | Response:
    """The page every employee sees on sign-in."""
    claim = request.args.get("claim")
    if claim is not None:  # from claim_url: bind, then show the page at its plain URL
        expected = transactions.claim_secret(_secret_key(), txn_id)
        if not hmac.compare_digest(claim.encode(), expected.encode()):
            abort(404)
        remember(txn_id)
        return redirect(f"/login/{txn_id}", 303)
    try:
        txn = owned_transaction(txn_id)
    except ServiceError:
        abort(404)
    return render_template(
        "login.html",
        txn=txn,
        ports=list(ctx().settings.agent_ports),
        sp_name=(txn.context or {}).get("sp_name"),
    )


@bp.post("/login/<txn_id>/challenge")
def login_challenge(txn_id: str) -> Response:
    """A fresh ``authenticate`` challenge bound to this transaction, for the agent."""
    txn = owned_transaction(txn_id, settle=False)
    services = ctx()
    if not service.is_open(services, txn):
        raise Conflict("login_closed", "This sign-in is finished or expired.")
    token, challenge = challenges.issue(services, "authenticate", transactions.binding_for(txn_id))
    response = jsonify(
        {
            "challenge": token,
            "expires_at": challenge.expires_at,
            "ports": list(services.settings.agent_ports),
        }
    )
    # One cookie keeps the holders of this browser's last few challenges (of any sign-in):
    # a retry fetches a new challenge while the agent may still answer an older one, and
    # a bounded cookie never grows the request headers however many sign-ins a browser runs.
    kept = [h for h in request.cookies.get(holder_cookie(), "").split(".") if len(h) == 32]
    kept = [
        *kept[-(MAX_HOLDERS - 1) :],
        transactions.holder_secret(_secret_key(), challenge.id_text),
    ]
    response.set_cookie(
        holder_cookie(),
        ".".join(kept),
        max_age=services.settings.login_ttl,
        path="/",
        secure=services.settings.public_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


def holder_cookie() -> str:
    """The name of the cookie that holds this browser's challenge holder secrets."""
    return cookie_name(ctx().settings, "devicetrust_holder")


@bp.post("/login/<txn_id>/response")
def login_response(txn_id: str) -> Response:
    """The browser forwards the agent's answer (the agent also posts it directly)."""
    _require_owned(txn_id)
    data = read_body(MAX_ENVELOPE)
    services = ctx()
    try:
        done = authenticate.verify(
            services,
            data,
            via="browser",
            expected_binding=transactions.binding_for(txn_id),
            remote_addr=request.remote_addr,
        )
    except ProtocolError as exc:
        if exc.code != "challenge_replayed":
            raise
        # The agent's direct callback won the race; the transaction state tells the truth.
    else:
        if done.txn_status in ("verified", "denied"):
            # The write that recorded the answer also said where the transaction stands.
            return _status_body(
                txn_id, service.answered(services, txn_id, done.txn_status, done.txn_error)
            )
    return _status(txn_id)


def _status(txn_id: str) -> Response:
    return _status_body(txn_id, service.status(ctx(), owned_transaction(txn_id)))


def _status_body(txn_id: str, status: service.Status) -> Response:
    body = {"status": status.status}
    if status.code:
        body.update(
            code=status.code,
            message=message_for(status.code),
            hint=HINTS.get(status.code, ""),
        )
    if status.status in ("verified", "denied"):
        body["next"] = f"/login/{txn_id}/continue"
    if status.approve_url:
        body["approve"] = status.approve_url  # the page asks for a code from a trusted device
    return jsonify(body)


@bp.get("/login/<txn_id>/status")
def login_status(txn_id: str) -> Response:
    """Where the transaction stands: pending, verified or denied (with why)."""
    return _status(txn_id)


@bp.route("/login/<txn_id>/continue", methods=["GET", "POST"])
def login_continue(txn_id: str) -> ResponseReturnValue:
    """Hand a finished transaction to the surface that started it, once posture allows.

    :func:`service.decide_continue` decides; a transaction that was completed
    already goes straight to its completer, which answers a repeat without
    issuing anything new (SAML: the same Response again, while it is valid;
    admin: the console if this browser is signed in).
    """
    try:
        found = owned_login(txn_id)
    except ServiceError:
        abort(404)
    services = ctx()
    outcome = service.decide_continue(
        services,
        found,
        choice=request.form.get("choice") if request.method == "POST" else None,
        secret_key=_secret_key(),
        holders=request.cookies.get(holder_cookie(), "").split(".")[-MAX_HOLDERS:],
        remote_addr=request.remote_addr,
    )
    if outcome.action == "wait":
        return redirect(f"/login/{txn_id}", 303)
    if outcome.action == "elsewhere":
        return _handed_over(outcome.txn)
    if outcome.action == "posture":
        page = render_template(
            "login_posture.html",
            txn=outcome.txn,
            verdict=outcome.verdict,
            blocked=outcome.blocked,
            ports=list(services.settings.agent_ports),
        )
        return page, 403 if outcome.blocked else 200
    completer = services.completers.get(outcome.kind) or complete_local
    # A completer answers what Flask sends (services.py types it as object: no Flask there).
    return cast("ResponseReturnValue", completer(outcome.txn, outcome.user, outcome.device))


def _handed_over(txn: LoginTransaction) -> tuple[str, int]:
    """The page of a ``/continue`` from a browser that did not fetch the answered challenge."""
    page = render_template(
        "login_done.html",
        txn=txn,
        user=None,
        device=None,
        code="login_elsewhere",
        message=MESSAGES["login_elsewhere"],
        hint="",
        approve_url=None,
    )
    return page, 403


def complete_local(txn: LoginTransaction, user: User | None, device: Device | None) -> str:
    """The plain device check's completer: a page that says how the check went."""
    code = txn.error_code or ("expired" if txn.status != "verified" else None)
    approve_url = None
    if code == "device_pending":  # without JavaScript: link the code form the script would open
        approve_url = service.approve_url(ctx(), txn)
    return render_template(
        "login_done.html",
        txn=txn,
        user=user,
        device=device,
        code=code,
        message=message_for(code),
        hint=HINTS.get(code or "", ""),
        approve_url=approve_url,
    )


# ---- The new device's half of the approve ceremony (signin/approve_web.py).


@bp.get("/login/<txn_id>/approve")
def approve_page(txn_id: str) -> Response | tuple[str, int]:
    """Ask for the code shown on the user's trusted device."""
    return approve_web.page(owned_transaction(txn_id))


@bp.post("/login/<txn_id>/approve")
def approve_submit(txn_id: str) -> Response | tuple[str, int]:
    """Check the typed code (``action=code``) or send new codes (``action=reissue``)."""
    return approve_web.submit(owned_transaction(txn_id))


# ---- Devices that are not (yet) trusted: enroll from the page, broker TOFU, waiting for approval.
# The logic lives in idp_service/signin/login_enroll.py; the page's half is the
# "enrollment" section of static/login.js.


@bp.get("/login/<txn_id>/enroll-options")
def login_enroll_options(txn_id: str) -> Response:
    """How this sign-in may enroll the device: always a code; maybe the broker's word (TOFU)."""
    txn = owned_transaction(txn_id)
    services = ctx()
    return jsonify(
        {
            "code": True,
            "tofu": login_enroll.tofu_offer(services, txn),
            "service_url": services.settings.public_url,
        }
    )


@bp.post("/login/<txn_id>/register-challenge")
def login_register_challenge(txn_id: str) -> Response:
    """A ``register`` challenge bound to this sign-in, for the agent's ``/v1/enroll``.

    The body is ``{"mode": "code"}`` (default) or ``{"mode": "tofu"}``. The
    enrollment code is never sent here: the agent seals it into its response.
    """
    txn = owned_transaction(txn_id)
    body = json_body(MAX_ENVELOPE, empty={})
    mode = body.get("mode", "code") if isinstance(body, dict) else None
    if not isinstance(mode, str) or mode not in login_enroll.MODES:
        raise Invalid("malformed", 'send {"mode": "code"} or {"mode": "tofu"}')
    services = ctx()
    token, challenge = login_enroll.issue_register_challenge(
        services, txn, mode, remote_addr=request.remote_addr
    )
    return jsonify(
        {
            "challenge": token,
            "expires_at": challenge.expires_at,
            "ports": list(services.settings.agent_ports),
        }
    )


@bp.post("/login/<txn_id>/check-again")
def login_check_again(txn_id: str) -> Response:
    """Waiting for approval: let this sign-in try again without starting over.

    Answers the status as JSON to the page's script, or redirects a plain form
    POST back to the login page.
    """
    owned_transaction(txn_id)
    login_enroll.reopen_pending(ctx(), txn_id)
    if request.accept_mimetypes.best == "application/json":
        return _status(txn_id)
    return redirect(f"/login/{txn_id}", 303)
