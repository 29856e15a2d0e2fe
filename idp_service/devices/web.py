"""Agent endpoints (``/agent/v1``; ``/agent/v2`` for reports): identity, challenges, registration,
callback, posture reports; and the quick path that takes unchanged v2 reports before Flask."""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.sansio.utils import host_is_trusted

from idp_service.devices import approve, challenges, enroll, report, report_v2
from idp_service.platform import audit, logs, metrics
from idp_service.platform.errors import Forbidden, Invalid, ServiceError
from idp_service.services import Services
from idp_service.signin import authenticate
from idp_service.signin.messages import message_for
from idp_service.web.bodies import json_body, read_body
from idp_service.web.context import ctx
from idp_service.web.headers import api_headers
from idp_service.web.observability import HEADER as REQUEST_ID_HEADER
from idp_service.web.observability import access, access_line
from trust_protocol.encoding import b64e
from trust_protocol.strict_json import printable_id

REAUTH_REFUSALS = ("reverify_required", "reauth_reused")

bp = Blueprint("agent_api", __name__, url_prefix="/agent/v1")
bp2 = Blueprint("agent_api_v2", __name__, url_prefix="/agent/v2")

MAX_ENVELOPE = 64 * 1024
MAX_REPORT = report.MAX_REPORT


def init_app(app: Flask, services: Services) -> None:
    """Serve the agent endpoints; the approval-code key is read now, never inside a write."""
    approve.load_key(services)
    app.register_blueprint(bp)
    app.register_blueprint(bp2)


def _body(limit: int = MAX_ENVELOPE) -> bytes:
    return read_body(limit)


def _report_body(limit: int, action: str = "device.report") -> bytes:
    """A v2 report's body; a refusal of the body itself (too large, empty) is audited too."""
    try:
        return read_body(limit)
    except ServiceError as exc:
        audit.record_separately(
            ctx().db, action, "rejected", code=exc.code, remote_addr=request.remote_addr
        )
        raise


@bp.get("/server")
def server_info() -> Response:
    """What an agent pins at enrollment: the signing key, its id, origins and ports."""
    service = ctx()
    return jsonify(
        {
            "protocol": 1,
            "server_key": b64e(bytes(service.keys.verify_key)),
            "kid": service.keys.kid,
            "origins": list(service.settings.allowed_origins),
            "agent_ports": list(service.settings.agent_ports),
            "public_url": service.settings.public_url,
            # Report ceremony v2 is spoken here: its box key, signed by the server key.
            "report": report_v2.advertisement(service),
        }
    )


@bp.post("/challenges")
def new_challenge() -> Response:
    """Issue a ``register`` challenge to an agent that is about to enroll."""
    body = json_body(MAX_ENVELOPE)
    if not isinstance(body, dict) or body.get("purpose") != "register":
        raise Invalid(
            "malformed", 'send {"purpose": "register"}; login challenges come from the login page'
        )
    service = ctx()
    token, challenge = challenges.issue(
        service, "register", "enroll", callback_path="/agent/v1/register"
    )
    return jsonify({"challenge": token, "expires_at": challenge.expires_at})


@bp.post("/register")
def register() -> tuple[Response, int]:
    """Register a device: the body is a response envelope to a ``register`` challenge."""
    result = enroll.register(ctx(), _body(), remote_addr=request.remote_addr)
    return jsonify(result.to_json()), 201


@bp.post("/callback")
def callback() -> Response:
    """The agent's direct answer to a login challenge (independent of the browser)."""
    result = authenticate.verify(ctx(), _body(), via="callback", remote_addr=request.remote_addr)
    if result.txn_status == "denied" and result.txn_error in REAUTH_REFUSALS:
        # The re-authentication step refused this sign-in (idp_service/upstream/reauth.py).
        raise Forbidden(result.txn_error, message_for(result.txn_error))
    body = {"status": "verified", "device_id": result.device_id}
    if result.reauth_grant is not None:  # the successor token, sealed to this device (§17)
        body["reauth"] = b64e(result.reauth_grant)
    return jsonify(body)


@bp.post("/report/challenge")
def report_challenge() -> Response:
    """A ``report`` challenge bound to the asking device."""
    body = json_body(MAX_ENVELOPE)
    device_id = body.get("device_id") if isinstance(body, dict) else None
    token, expires_at = report.issue_challenge(
        ctx(), printable_id(device_id) if isinstance(device_id, str) else None
    )
    return jsonify({"challenge": token, "expires_at": expires_at})


@bp.post("/report")
def report_facts() -> Response:
    """A posture report: the body is a response envelope to a ``report`` challenge."""
    return jsonify(report.ingest(ctx(), _body(MAX_REPORT), remote_addr=request.remote_addr))


@bp2.post("/report")
def report_v2_small() -> Response:
    """A v2 report, unchanged or a delta (docs/protocol.md §16); at most 64 KiB."""
    return jsonify(
        report_v2.ingest(
            ctx(),
            _report_body(report_v2.MAX_SMALL),
            full_endpoint=False,
            remote_addr=request.remote_addr,
            fast_tried=bool(request.environ.get(QUICK_DECLINED)),
        )
    )


@bp2.post("/report/full")
def report_v2_full() -> Response:
    """A v2 report carrying the whole fact document; at most 1 MiB."""
    return jsonify(
        report_v2.ingest(
            ctx(),
            _report_body(report_v2.MAX_FULL),
            full_endpoint=True,
            remote_addr=request.remote_addr,
        )
    )


@bp2.post("/report/reset")
def report_v2_reset() -> Response:
    """Counter re-establishment: an answer to a ``report`` challenge (at most 64 KiB)."""
    body = _report_body(MAX_ENVELOPE, "device.report_counter_reset")
    return jsonify(report_v2.reset(ctx(), body, remote_addr=request.remote_addr))


@bp.post("/notices")
def notices() -> Response:
    """A trusted device's pending approval notices; the body is a signed poll."""
    try:
        body = _body(1024)
    except ServiceError as exc:
        audit.record_separately(
            ctx().db, "approval.poll", "rejected", code=exc.code, remote_addr=request.remote_addr
        )
        raise
    sealed = approve.notices_for(ctx(), body, remote_addr=request.remote_addr)
    return jsonify({"notices": sealed})


QUICK_PATH = "/agent/v2/report"
QUICK_DECLINED = "devicetrust.report_quick_declined"
log = logging.getLogger(__name__)


class ReportQuickPath:
    """WSGI middleware, outermost: unchanged v2 reports answered before Flask is entered.

    About 98 % of reports say "nothing changed". For them the whole service work is
    a box, a signature and one guarded UPDATE (``report_v2.take_unchanged``), and
    the framework around it (routing, request and response objects, the rate
    limiter, the body guard, the access line) would cost more than that work. So a
    ``POST /agent/v2/report`` with a ``Content-Length`` within the route's limit and
    an allowed ``Host`` is read here, exactly, and offered to ``take_unchanged``.
    Taken: the signed acknowledgement is sent with the same headers the app would
    add (request id, security headers, HSTS), counted in the HTTP and report
    metrics, and logged at DEBUG (``devicetrust.access``; the reports counter says
    how many). Declined (a delta, an unknown key, a bad signature, a stale counter,
    anything at all): the same bytes go on to the app, which judges them through
    ``report_v2.ingest``, so every refusal keeps its rate limit, code and audit
    event. A request without a usable ``Content-Length`` (chunked, too large,
    absent) goes to the app unread.
    """

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services
        settings = services.settings
        self.limit = min(report_v2.MAX_SMALL, settings.max_request_bytes or report_v2.MAX_SMALL)
        self.hosts = list(settings.trusted_hosts)
        self.host_ok: dict[str, bool] = {}  # Host header -> allowed (few distinct values)
        self.headers = [("Content-Type", "application/json"), *api_headers(settings)]

    def _host_allowed(self, host: str) -> bool:
        """Werkzeug's own check (the app's ``TRUSTED_HOSTS``), remembered per value."""
        allowed = self.host_ok.get(host)
        if allowed is None:
            allowed = host_is_trusted(host, self.hosts)
            if len(self.host_ok) < 64:
                self.host_ok[host] = allowed
        return allowed

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") != QUICK_PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("SCRIPT_NAME")
            or environ.get("HTTP_TRANSFER_ENCODING")
        ):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        given = environ.get("CONTENT_LENGTH") or ""
        length = int(given) if given.isdigit() else 0
        if not 0 < length <= self.limit:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if self.hosts and not self._host_allowed(environ.get("HTTP_HOST", "")):
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        started = time.perf_counter()
        body = environ["wsgi.input"].read(length)
        answer = None
        if len(body) == length:
            try:
                answer = report_v2.take_unchanged(self.services, body)
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: the app answers
                # Only the kind: a driver's message may quote the values of the statement.
                log.warning("the quick path could not take a report (%s)", type(exc).__name__)
        if answer is None:
            environ["wsgi.input"] = io.BytesIO(body)
            environ[QUICK_DECLINED] = True
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        data = json.dumps(answer, separators=(",", ":")).encode()
        rid = secrets.token_hex(8)
        start_response(
            "200 OK",
            [
                *self.headers,
                ("Content-Length", str(len(data))),
                (REQUEST_ID_HEADER, rid),
            ],
        )
        metrics.http_response(200)
        if access.isEnabledFor(logging.DEBUG):
            token = logs.request_id.set(rid)  # every line names its request's id
            try:
                access_line(logging.DEBUG, environ, "POST", QUICK_PATH, 200, started, quick=True)
            finally:
                logs.request_id.reset(token)
        return [data]
