"""The upstream sign-in's Flask half: start at the provider, come back at the callback.

``GET /upstream/<idp>/start?txn=<id>`` (the login page's button) records an
authorization request for a login transaction this browser holds and sends the
browser to the provider; ``GET /upstream/callback`` hands the provider's answer to
:func:`idp_service.upstream.service.finish` and returns to the login page, or
shows a refusal page with its stable code. The logic is in ``service.py``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, redirect, render_template, request
from flask import session as cookie_session
from werkzeug.wrappers import Response

from idp_service.platform.errors import NotFound, ServiceError
from idp_service.services import Services
from idp_service.upstream import reauth, service
from idp_service.web.context import ctx
from idp_service.web.errors import status_of
from trust_protocol.encoding import b64e

bp = Blueprint("upstream", __name__)
EXTENSION = "devicetrust.upstream"


def init_app(app: Flask, services: Services) -> None:
    """Load the upstream IdPs, serve ``/upstream``, and offer the IdPs to the login page."""
    registry = service.load_registry(services.settings.public_url, services.settings.upstream_idps)
    app.extensions[EXTENSION] = registry

    @app.context_processor
    def _upstream_idps() -> dict[str, Any]:
        return {"upstream_idps": registry.listing()}

    app.register_blueprint(bp)


def registry() -> service.Registry:
    """This process's upstream IdPs."""
    found: service.Registry = current_app.extensions[EXTENSION]
    return found


def _refusal(exc: ServiceError) -> tuple[str, int]:
    page = render_template(
        "upstream/refused.html", code=exc.code, message=exc.message, hint=exc.hint
    )
    return page, status_of(exc)


def _owned() -> list[str]:
    owned = cookie_session.get("login_txns", [])
    return [t for t in owned if isinstance(t, str)] if isinstance(owned, list) else []


@bp.get("/upstream/<idp_id>/start")
def start(idp_id: str) -> Response | tuple[str, int]:
    """Send the browser to the provider for a sign-in this browser started."""
    txn_id = request.args.get("txn", "")
    purpose = request.args.get("purpose", "enroll")
    try:
        url = service.begin(
            ctx(),
            registry(),
            idp_id,
            txn_id,
            purpose,
            owned_txns=_owned(),
            remote_addr=request.remote_addr,
        )
    except ServiceError as exc:
        return _refusal(exc)
    return redirect(url, 303)


@bp.get("/agent/v1/reauth/<challenge_id>")
def reauth_pickup(challenge_id: str) -> Response | tuple[Response, int]:
    """The re-authentication grant sealed in a sign-in, for a device whose reply was lost.

    Only the device it is sealed to can open it, so it is served without a credential.
    """
    sealed = reauth.pickup(ctx(), challenge_id)
    if sealed is None:
        raise NotFound("reauth_none", "No re-authentication grant was issued in that sign-in.")
    return jsonify({"grant": b64e(sealed)})


@bp.get("/upstream/callback")
def callback() -> Response | tuple[str, int]:
    """The provider's answer: back to the login page, or a refusal page."""
    try:
        done = service.finish(
            ctx(),
            registry(),
            state=request.args.get("state"),
            code=request.args.get("code"),
            error=request.args.get("error"),
            iss=request.args.get("iss"),
            owned_txns=_owned(),
            remote_addr=request.remote_addr,
        )
    except ServiceError as exc:
        return _refusal(exc)
    if done.purpose == "approve":  # back to the code form of the device waiting for approval
        return redirect(f"/login/{done.txn_id}/approve", 303)
    return redirect(f"/login/{done.txn_id}", 303)
