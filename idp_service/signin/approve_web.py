"""The new device's half of the approve ceremony on the login page: type the code.

A sign-in denied with ``device_pending`` whose device has an open approval
request (``idp_service/devices/approve.py``) gets this page instead of "waiting for
approval". The form posts to ``/login/<txn>/approve``: it must come from the
browser that owns the transaction (session cookie, checked by the route in
``signin/web.py``, which declares both routes) and carry this session's CSRF
token. A right code trusts the device and reopens the sign-in, which then asks
the agent for a fresh answer to a fresh challenge (the assertion rests on that
answer, never on the code). Every outcome is audited, never the code.

When the re-verification policy asks for it (``second_device``,
``idp_service/upstream/reauth.py``), the page offers the upstream sign-in
instead of the code form until one in this sign-in proved the device's owner,
and a code is refused ``upstream_required``.
"""

from __future__ import annotations

from flask import redirect, render_template, request
from werkzeug.wrappers import Response  # what redirect() returns

from idp_service.devices import approve
from idp_service.platform import audit
from idp_service.platform.errors import Conflict, Invalid, ServiceError
from idp_service.platform.models import LoginTransaction, utcnow
from idp_service.signin import login_enroll, service
from idp_service.upstream import reauth
from idp_service.web.context import ctx
from idp_service.web.csrf import CsrfGuard
from idp_service.web.errors import status_of

APPROVE_CSRF = CsrfGuard(
    "login_approve_csrf",
    "This form is stale or did not come from this page.",
    "Reload the sign-in page and try again.",
)


def _page(txn: LoginTransaction, status: int = 200, **extra: object) -> tuple[str, int]:
    upstream = reauth.approval_needs_upstream(ctx(), txn.id, txn.device_id or "")
    with ctx().db.session() as s:
        req = approve.open_for_device(s, txn.device_id or "")
        view = {
            "open": req is not None,
            "expired": req is not None and req.expires_at <= utcnow(),
            "attempts_left": (req.max_attempts - req.attempts) if req else 0,
        }
    return render_template(
        "login_approve.html",
        txn=txn,
        csrf=APPROVE_CSRF.token(),
        req=view,
        upstream_required=upstream,
        **extra,
    ), status


def page(txn: LoginTransaction) -> Response | tuple[str, int]:
    """Ask for the code shown on the user's trusted device (``GET /login/<txn>/approve``)."""
    if service.waiting_device(txn) is None:
        return redirect(f"/login/{txn.id}", 303)
    return _page(txn)


def submit(txn: LoginTransaction) -> Response | tuple[str, int]:
    """Check the typed code (``action=code``) or send new codes (``action=reissue``)."""
    txn_id = txn.id
    services = ctx()
    try:
        APPROVE_CSRF.check()
        device_id = service.waiting_device(txn)
        if device_id is None:
            raise Conflict("approval_closed", "This sign-in is not waiting for approval.")
        reauth.approval_gate(services, txn_id, device_id, remote_addr=request.remote_addr)
        action = request.form.get("action", "code")
        if action == "reissue":
            left = approve.reissue(services, device_id, remote_addr=request.remote_addr)
            return _page(txn, notice="reissued", attempts_left=left)
        if action != "code":
            raise Invalid("bad_action", "Unknown action.")
        outcome = approve.submit(
            services, device_id, request.form.get("code", ""), remote_addr=request.remote_addr
        )
    except ServiceError as exc:
        audit.record_separately(
            services.db,
            "approval.code",
            "rejected",
            code=exc.code,
            device_id=txn.device_id,
            remote_addr=request.remote_addr,
            details={"txn": txn_id},
        )
        return _page(txn, status_of(exc), error=exc)
    if outcome.result == "approved":
        login_enroll.reopen_pending(services, txn_id)  # the page asks the agent again
        return redirect(f"/login/{txn_id}", 303)
    return _page(txn, 200 if outcome.result != "wrong" else 403, outcome=outcome)
