"""The login page: find the local agent, hand it a challenge, wait for a verified answer.

A sign-in is a *login transaction* (``idp_service/signin/transactions.py``). The page
asks for a challenge bound to it, offers the challenge to the agent on each of
its loopback ports, forwards the agent's answer, and polls until the
transaction is verified or denied, by whichever path the answer arrived (the
browser's fetch or the agent's direct callback). Then ``/login/<id>/continue``
hands the transaction to the surface that started it (SAML, or the plain
device check) through a *completer* registered in ``LOGIN_COMPLETERS``.

Transactions are bound to the browser that started them by the session cookie,
so a transaction id alone is worth nothing to someone else. A session cookie
can be copied into another browser (planted), so a verified transaction is
also bound to the browser whose device answered it: ``/challenge`` sets a
holder cookie derived from the challenge it hands out, and ``/continue``
requires the holder of the challenge that was answered
(:func:`idp_service.signin.transactions.holder_secret`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from sqlalchemy.orm import Session

from idp_service.devices import challenges
from idp_service.platform import audit
from idp_service.platform.config import cookie_name
from idp_service.platform.errors import HINTS, Conflict, Invalid, NotFound, ServiceError
from idp_service.platform.models import Device, LoginTransaction, User
from idp_service.signin import authenticate, login_enroll, transactions
from idp_service.signin.reads import read_login, read_transaction
from idp_service.web.bodies import json_body, read_body
from idp_service.web.context import ctx
from trust_protocol.errors import CODES, ProtocolError

bp = Blueprint("login", __name__)

MAX_TXNS_PER_SESSION = 8
MAX_ENVELOPE = 64 * 1024
MAX_HOLDERS = 8  # challenge holders a browser keeps (one cookie, about 260 bytes)

# kind -> function(txn, user, device) -> Response. The SAML surface registers "saml".
Completer = Callable[[LoginTransaction, User | None, Device | None], Response | str]
LOGIN_COMPLETERS: dict[str, Completer] = {}

MESSAGES = {
    "device_unknown": "This device is not enrolled yet.",
    "device_pending": "This device is waiting for approval by IT or by one of your trusted "
    "devices.",
    "device_denied": "Your IT administrator denied this device.",
    "device_revoked": "This device's trust was revoked.",
    "device_suspended": "This device is suspended pending a security review by IT.",
    "owner_inactive": "Your account is deactivated.",
    "device_key_mismatch": "This device answered with a key that does not match its enrollment.",
    "expired": "This sign-in took too long and has expired.",
    "posture_blocked": "This device does not meet your organization's security requirements.",
    "login_elsewhere": "This sign-in was answered by a device in another browser, so it "
    "cannot be continued here. Start a new sign-in on this computer.",
}


def remember(txn_id: str) -> None:
    """Bind a transaction to this browser's session cookie."""
    owned = [t for t in session.get("login_txns", []) if t != txn_id]
    session["login_txns"] = (owned + [txn_id])[-MAX_TXNS_PER_SESSION:]


def start_transaction(kind: str, context: dict | None = None) -> str:
    """Create a transaction for this browser; other surfaces (SAML) call this too."""
    service = ctx()
    with service.db.session() as s:
        txn_id = transactions.create(
            s, ttl_seconds=service.settings.login_ttl, context={"kind": kind, **(context or {})}
        )
    remember(txn_id)
    return txn_id


def _require_owned(txn_id: str) -> None:
    """404 unless this browser's session cookie holds the transaction (no oracle for guessing)."""
    if txn_id not in session.get("login_txns", []):
        raise NotFound("login_unknown", "No such sign-in in this browser.")


def owned_transaction(txn_id: str, *, settle: bool = True) -> LoginTransaction:
    """The transaction if this browser owns it; 404 otherwise (no oracle for guessing).

    One statement reads it. A pending one is settled (a verified answer recorded
    by other means copied onto it) unless ``settle`` is False; answers recorded
    by ``authenticate.verify`` already verified their transaction in the same write.
    """
    _require_owned(txn_id)
    db = ctx().db
    txn = read_transaction(db.engine, txn_id)
    if txn is None:
        raise NotFound("login_unknown", "No such sign-in in this browser.")
    if settle and txn.status == "pending":
        with db.session() as s:
            txn = transactions.settle(s, txn)
    return txn


def owned_login(txn_id: str) -> tuple[LoginTransaction, User | None, Device | None]:
    """The owned transaction with its user and device as they are now, in one statement
    (detached snapshots); 404 as :func:`owned_transaction`. A pending one is settled first."""
    _require_owned(txn_id)
    db = ctx().db
    found = read_login(db.engine, txn_id)
    if found is not None and found[0].status == "pending":
        with db.session() as s:
            settled = transactions.settle(s, found[0])
        if settled.status != "pending":
            found = read_login(db.engine, txn_id)
    if found is None:
        raise NotFound("login_unknown", "No such sign-in in this browser.")
    return found


@bp.get("/login")
def login_start() -> Response:
    """Start a plain device check (no SAML): useful to test an enrollment."""
    return redirect(f"/login/{start_transaction('local')}", 303)


@bp.get("/login/<txn_id>")
def login_page(txn_id: str) -> str:
    """The page every employee sees on sign-in."""
    try:
        txn = owned_transaction(txn_id)
    except ServiceError:
        abort(404)
    service = ctx()
    return render_template(
        "login.html",
        txn=txn,
        ports=list(service.settings.agent_ports),
        sp_name=(txn.context or {}).get("sp_name"),
    )


@bp.post("/login/<txn_id>/challenge")
def login_challenge(txn_id: str) -> Response:
    """A fresh ``authenticate`` challenge bound to this transaction, for the agent."""
    txn = owned_transaction(txn_id, settle=False)
    if not transactions.is_open(txn):
        raise Conflict("login_closed", "This sign-in is finished or expired.")
    service = ctx()
    token, challenge = challenges.issue(service, "authenticate", transactions.binding_for(txn_id))
    response = jsonify(
        {
            "challenge": token,
            "expires_at": challenge.expires_at,
            "ports": list(service.settings.agent_ports),
        }
    )
    # One cookie keeps the holders of this browser's last few challenges (of any sign-in):
    # a retry fetches a new challenge while the agent may still answer an older one, and
    # a bounded cookie never grows the request headers however many sign-ins a browser runs.
    kept = [h for h in request.cookies.get(holder_cookie(), "").split(".") if len(h) == 32]
    kept = [
        *kept[-(MAX_HOLDERS - 1) :],
        transactions.holder_secret(current_app.secret_key, challenge.id_text),
    ]
    response.set_cookie(
        holder_cookie(),
        ".".join(kept),
        max_age=service.settings.login_ttl,
        path="/",
        secure=service.settings.public_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


def holder_cookie() -> str:
    """The name of the cookie that holds this browser's challenge holder secrets."""
    return cookie_name(ctx().settings, "devicetrust_holder")


def _holder_ok(txn_id: str) -> bool:
    """True unless the transaction was verified by a challenge this browser did not fetch."""
    with ctx().db.session() as s:
        answered = transactions.answered_challenge(s, txn_id)
    if answered is None:
        return True  # nothing verified, nothing to hand over
    expected = transactions.holder_secret(current_app.secret_key, answered).encode()
    sent = request.cookies.get(holder_cookie(), "").split(".")[-MAX_HOLDERS:]
    found = False
    for holder in sent:  # no early exit: every kept holder is compared
        found |= hmac.compare_digest(holder.encode(), expected)
    return found


def _handed_over(txn: LoginTransaction) -> tuple[str, int]:
    """The refusal of a ``/continue`` from a browser that did not fetch the answered challenge."""
    audit.record_separately(
        ctx().db,
        "login.continue",
        "rejected",
        code="login_elsewhere",
        user_id=txn.user_id,
        device_id=txn.device_id,
        remote_addr=request.remote_addr,
        details={"kind": (txn.context or {}).get("kind", "local")},
    )
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


@bp.post("/login/<txn_id>/response")
def login_response(txn_id: str) -> Response:
    """The browser forwards the agent's answer (the agent also posts it directly)."""
    _require_owned(txn_id)
    data = read_body(MAX_ENVELOPE)
    try:
        done = authenticate.verify(
            ctx(),
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
            return _status_body(txn_id, done.txn_status, done.txn_error)
    return _status(txn_id)


def _status(txn_id: str) -> Response:
    txn = owned_transaction(txn_id)
    status = txn.status
    code = txn.error_code
    if status == "pending" and not transactions.is_open(txn):
        status, code = "denied", "expired"
    return _status_body(txn_id, status, code)


def _status_body(txn_id: str, status: str, code: str | None) -> Response:
    body = {"status": status}
    if code:
        body.update(
            code=code,
            message=MESSAGES.get(code, CODES.get(code, code)),
            hint=HINTS.get(code, ""),
        )
    if status in ("verified", "denied"):
        body["next"] = f"/login/{txn_id}/continue"
    if code == "device_pending":
        from idp_service.signin.approve_web import approve_url

        url = approve_url(txn_id)
        if url:
            body["approve"] = url  # the page asks for a code from a trusted device
    return jsonify(body)


@bp.get("/login/<txn_id>/status")
def login_status(txn_id: str) -> Response:
    """Where the transaction stands: pending, verified or denied (with why)."""
    return _status(txn_id)


@bp.route("/login/<txn_id>/continue", methods=["GET", "POST"])
def login_continue(txn_id: str) -> Response | str | tuple[str, int]:
    """Hand a finished transaction to the surface that started it, once posture allows.

    A transaction that was completed already goes straight to its completer, which
    answers a repeat without issuing anything new (SAML: the same Response again,
    while it is valid; admin: the console if this browser is signed in).
    """
    try:
        txn, user, device = owned_login(txn_id)
    except ServiceError:
        abort(404)
    if txn.status == "pending" and transactions.is_open(txn):
        return redirect(f"/login/{txn_id}", 303)
    if not _holder_ok(txn_id):
        return _handed_over(txn)
    kind = (txn.context or {}).get("kind", "local")
    completer = LOGIN_COMPLETERS.get(kind, _complete_local)
    if txn.completed_at is not None:
        # Already completed (the page went here twice, or the user reloaded): the
        # completer decides what a repeat gets; it never issues anything new.
        return completer(txn, user, device)
    with ctx().db.session() as s:
        if txn.status == "verified":
            # Recheck at the last moment (user and device were read just now): a revocation
            # since verification wins. The SAML completer checks again in its claim.
            if not _still_trusted(user, device):
                code = (
                    "owner_inactive" if user is not None and not user.active else "device_revoked"
                )
                if device is not None and device.state == "suspended":
                    code = "device_suspended"
                transactions.mark_denied(
                    s, txn_id, code=code, device_id=txn.device_id, user_id=txn.user_id
                )
                txn.status, txn.error_code = "denied", code
        if txn.status == "verified" and user is not None and device is not None:
            page = _posture_gate(s, txn, user, device)
            if page is not None:
                return page
    return completer(txn, user, device)


def _still_trusted(user: User | None, device: Device | None) -> bool:
    return (
        user is not None
        and device is not None
        and device.state == "trusted"
        and device.user_id == user.id
        and bool(user.active)
    )


def _posture_gate(
    s: Session, txn: LoginTransaction, user: User, device: Device
) -> tuple[str, int] | None:
    """Evaluate posture for this sign-in; a page to show instead of completing, or None.

    A blocking failure keeps the sign-in open on a page with each failing check's
    remediation and "Recheck now"; cancelling it denies the sign-in. Warnings are
    shown once, and the user continues past them.
    """
    from idp_service.directory.groups import groups_of
    from idp_service.posture.service import Posture
    from posture_checks.enforcement import Action

    posture: Posture = ctx().extras["posture"]
    if not posture.checks():
        return None  # nothing to enforce: spare the sign-in the group lookup
    verdict = posture.for_login(s, device.id, user.id, user.user_name, groups_of(s, user.id))
    choice = request.form.get("choice") if request.method == "POST" else None
    if verdict.action is Action.BLOCK:
        if choice == "cancel":
            transactions.mark_denied(
                s, txn.id, code="posture_blocked", device_id=device.id, user_id=user.id
            )
            txn.status, txn.error_code = "denied", "posture_blocked"
            audit.record(
                s,
                "login.posture",
                "denied",
                code="posture_blocked",
                user_id=user.id,
                device_id=device.id,
                details=verdict.summary(),
            )
            return None
        return _posture_page(txn, verdict, blocked=True), 403
    if verdict.action is Action.WARN and choice != "continue":
        return _posture_page(txn, verdict, blocked=False), 200
    return None


def _posture_page(txn: LoginTransaction, verdict: object, *, blocked: bool) -> str:
    return render_template(
        "login_posture.html",
        txn=txn,
        verdict=verdict,
        blocked=blocked,
        ports=list(ctx().settings.agent_ports),
    )


def _complete_local(txn: LoginTransaction, user: User | None, device: Device | None) -> str:
    code = txn.error_code or ("expired" if txn.status != "verified" else None)
    approve_url = None
    if code == "device_pending":  # without JavaScript: link the code form the script would open
        from idp_service.signin.approve_web import approval_open

        approve_url = f"/login/{txn.id}/approve" if approval_open(txn) else None
    return render_template(
        "login_done.html",
        txn=txn,
        user=user,
        device=device,
        code=code,
        message=MESSAGES.get(code or "", CODES.get(code or "", code or "")),
        hint=HINTS.get(code or "", ""),
        approve_url=approve_url,
    )


# ---- Devices that are not (yet) trusted: enroll from the page, broker TOFU, waiting for approval.
# The logic lives in idp_service/signin/login_enroll.py; the page's half is the
# "enrollment" section of static/login.js.


@bp.get("/login/<txn_id>/enroll-options")
def login_enroll_options(txn_id: str) -> Response:
    """How this sign-in may enroll the device: always a code; maybe the broker's word (TOFU)."""
    txn = owned_transaction(txn_id)
    service = ctx()
    return jsonify(
        {
            "code": True,
            "tofu": login_enroll.tofu_offer(service, txn),
            "service_url": service.settings.public_url,
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
    service = ctx()
    try:
        token, challenge = login_enroll.issue_register_challenge(service, txn, mode)
    except login_enroll.TofuUnavailable as exc:
        audit.record_separately(
            service.db,
            "device.register",
            "rejected",
            code=exc.code,
            remote_addr=request.remote_addr,
            details={"method": "broker", "reason": exc.reason, "stage": "challenge"},
        )
        raise
    return jsonify(
        {
            "challenge": token,
            "expires_at": challenge.expires_at,
            "ports": list(service.settings.agent_ports),
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
