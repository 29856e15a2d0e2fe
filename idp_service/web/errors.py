"""Stable JSON errors for every machine-facing endpoint.

Handlers raise :class:`ApiError` (or a :class:`~trust_protocol.ProtocolError`,
which maps to one); the app turns it into a 4xx JSON body
``{"error": {"code", "message", "hint"}}``. Unexpected exceptions are logged and
answered with a generic 500 that leaks nothing; tests assert they never happen.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, SecurityError

from trust_protocol.errors import CODES as PROTOCOL_CODES
from trust_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

# Protocol code -> HTTP status. Device-state refusals are 403; replays are 409.
PROTOCOL_STATUS: dict[str, int] = {
    "too_large": 413,
    "challenge_replayed": 409,
    "challenge_expired": 410,
    "challenge_unknown": 404,
    "device_unknown": 403,
    "device_key_mismatch": 403,
    "device_pending": 403,
    "device_denied": 403,
    "device_revoked": 403,
    "device_suspended": 403,
    "owner_inactive": 403,
    "bad_poll_signature": 403,
    "poll_expired": 403,
}

# What a person or a script should do next, per code.
HINTS: dict[str, str] = {
    "challenge_expired": "Start the sign-in again; challenges live for at most two minutes.",
    "challenge_replayed": "Start the sign-in again; each challenge is answered once.",
    "clock_skew": "Set the device's clock automatically (NTP), then try again.",
    "device_unknown": "Enroll this device: devicetrust-agent enroll URL CODE.",
    "device_pending": "Ask your IT administrator to approve this device.",
    "device_revoked": "This device's trust was revoked; ask your IT administrator.",
    "device_denied": "An administrator denied this device; ask your IT administrator.",
    "owner_inactive": "Your account is deactivated; ask your IT administrator.",
    "device_suspended": "Contact your IT help desk and mention this device; do not copy or "
    "restore the agent's files onto another computer. IT will approve, replace or revoke it.",
    "enroll_code_invalid": "Ask your administrator for a new code: devicetrust enroll-code create.",
}

HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ApiError(Exception):
    """A request refused with a stable ``code`` and an HTTP ``status``."""

    def __init__(self, code: str, message: str, status: int = 400, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.hint = hint or HINTS.get(code, "")

    @classmethod
    def from_protocol(cls, exc: ProtocolError) -> ApiError:
        """Map a protocol refusal to its HTTP form."""
        return cls(exc.code, exc.detail, PROTOCOL_STATUS.get(exc.code, 400))

    def response(self) -> Response:
        """The JSON response for this error."""
        body = {"error": {"code": self.code, "message": self.message}}
        if self.hint:
            body["error"]["hint"] = self.hint
        resp = jsonify(body)
        resp.status_code = self.status
        return resp


def wants_json() -> bool:
    """True for machine-facing paths, where errors are JSON rather than pages."""
    path = request.path
    return (
        path.startswith(("/agent/", "/api/", "/healthz", "/readyz"))
        or path.endswith(("/challenge", "/response", "/status"))
        or request.accept_mimetypes.best == "application/json"
    )


def register_error_handlers(app: Flask) -> None:
    """Install the JSON/page error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return exc.response()

    @app.errorhandler(ProtocolError)
    def _protocol_error(exc: ProtocolError) -> Response:
        return ApiError.from_protocol(exc).response()

    @app.errorhandler(SecurityError)
    def _host_not_allowed(exc: SecurityError) -> Response:
        # Werkzeug raises it for a Host header outside TRUSTED_HOSTS (app.py); nothing
        # here may read request.host, which would raise again.
        return ApiError(
            "host_not_allowed",
            "This service does not answer to that host name.",
            400,
            "Use the service's public URL; operators list other names in "
            "DEVICETRUST_TRUSTED_HOSTS (docs/deploy.md).",
        ).response()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | HTTPException:
        status = exc.code or 400
        if not wants_json():
            return exc
        return ApiError(
            HTTP_CODES.get(status, f"http_{status}"), exc.description or "", status
        ).response()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        resp = jsonify({"error": {"code": "internal", "message": "internal error"}})
        resp.status_code = 500
        return resp


__all__ = ["PROTOCOL_CODES", "ApiError", "register_error_handlers"]
