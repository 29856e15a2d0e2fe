"""The new device's half of the approve ceremony on the login page: type the code.

A sign-in denied with ``device_pending`` whose device has an open approval
request (``idp_service/devices/approve.py``) gets this page instead of "waiting for
approval". The form posts to ``/login/<txn>/approve``: it must come from the
browser that owns the transaction (session cookie) and carry this session's
CSRF token. A right code trusts the device and reopens the sign-in, which then
asks the agent for a fresh answer to a fresh challenge (the assertion rests on
that answer, never on the code). Every outcome is audited, never the code.
"""

from __future__ import annotations

from flask import Response, redirect, render_template, request

from idp_service.devices import approve
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Invalid, ServiceError
from idp_service.platform.models import LoginTransaction, utcnow
from idp_service.signin import login_enroll
from idp_service.signin.web import bp, owned_transaction
from idp_service.web.context import ctx
from idp_service.web.csrf import CsrfGuard
from idp_service.web.errors import status_of

APPROVE_CSRF = CsrfGuard(
    "login_approve_csrf",
    "This form is stale or did not come from this page.",
    "Reload the sign-in page and try again.",
)


def waiting_device(txn: LoginTransaction) -> str | None:
    """The device of a sign-in refused only because it waits for approval, else None."""
    if txn.status == "denied" and txn.error_code == "device_pending" and txn.device_id:
        return txn.device_id
    return None


def approval_open(txn: LoginTransaction) -> bool:
    """Whether this sign-in's waiting device has an open approval request."""
    device_id = waiting_device(txn)
    if device_id is None:
        return False
    with ctx().db.session() as s:
        return approve.open_for_device(s, device_id) is not None


def approve_url(txn_id: str) -> str | None:
    """Where the login page asks for the code, when this sign-in's device can use one."""
    from idp_service.signin.reads import read_transaction

    txn = read_transaction(ctx().db.engine, txn_id)
    return f"/login/{txn_id}/approve" if txn is not None and approval_open(txn) else None


def _page(txn: LoginTransaction, status: int = 200, **extra: object) -> tuple[str, int]:
    with ctx().db.session() as s:
        req = approve.open_for_device(s, txn.device_id or "")
        view = {
            "open": req is not None,
            "expired": req is not None and req.expires_at <= utcnow(),
            "attempts_left": (req.max_attempts - req.attempts) if req else 0,
        }
    return render_template(
        "login_approve.html", txn=txn, csrf=APPROVE_CSRF.token(), req=view, **extra
    ), status


@bp.get("/login/<txn_id>/approve")
def approve_page(txn_id: str) -> Response | tuple[str, int]:
    """Ask for the code shown on the user's trusted device."""
    txn = owned_transaction(txn_id)
    if waiting_device(txn) is None:
        return redirect(f"/login/{txn_id}", 303)
    return _page(txn)


@bp.post("/login/<txn_id>/approve")
def approve_submit(txn_id: str) -> Response | tuple[str, int]:
    """Check the typed code (``action=code``) or send new codes (``action=reissue``)."""
    txn = owned_transaction(txn_id)
    service = ctx()
    try:
        APPROVE_CSRF.check()
        device_id = waiting_device(txn)
        if device_id is None:
            raise Conflict("approval_closed", "This sign-in is not waiting for approval.")
        action = request.form.get("action", "code")
        if action == "reissue":
            left = approve.reissue(service, device_id, remote_addr=request.remote_addr)
            return _page(txn, notice="reissued", attempts_left=left)
        if action != "code":
            raise Invalid("bad_action", "Unknown action.")
        outcome = approve.submit(
            service, device_id, request.form.get("code", ""), remote_addr=request.remote_addr
        )
    except ServiceError as exc:
        audit.record_separately(
            service.db,
            "approval.code",
            "rejected",
            code=exc.code,
            device_id=txn.device_id,
            remote_addr=request.remote_addr,
            details={"txn": txn_id},
        )
        return _page(txn, status_of(exc), error=exc)
    if outcome.result == "approved":
        login_enroll.reopen_pending(service, txn_id)  # the page asks the agent again
        return redirect(f"/login/{txn_id}", 303)
    return _page(txn, 200 if outcome.result != "wrong" else 403, outcome=outcome)
