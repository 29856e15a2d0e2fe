"""Stable JSON errors for every machine-facing endpoint: refusals become HTTP here only.

Services raise the kinds of :mod:`idp_service.platform.errors` (or a
:class:`~trust_protocol.ProtocolError`); this module alone decides their HTTP
status (:data:`STATUS`, :data:`PROTOCOL_STATUS`) and turns them into a 4xx JSON body
``{"error": {"code", "message", "hint"}}``. Unexpected exceptions are logged and
answered with a generic 500 that leaks nothing; tests assert they never happen.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, SecurityError

from idp_service.platform import errors as domain
from idp_service.platform.errors import ServiceError
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
    "report_counter_stale": 409,
    "report_resync": 409,
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


# The HTTP status of each kind of refusal (the most specific class wins).
STATUS: dict[type[ServiceError], int] = {
    domain.Invalid: 400,
    domain.Unauthenticated: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Gone: 410,
    domain.TooLarge: 413,
    domain.Unsupported: 415,
    domain.Unprocessable: 422,
    domain.RateLimited: 429,
    domain.Unavailable: 503,
}


class ApiError(ServiceError):
    """A refusal made by the web layer itself, with its HTTP ``status`` given directly."""

    def __init__(self, code: str, message: str, status: int = 400, hint: str = "") -> None:
        super().__init__(code, message, hint)
        self.status = status

    @classmethod
    def from_protocol(cls, exc: ProtocolError) -> ApiError:
        """Map a protocol refusal to its HTTP form."""
        return cls(exc.code, exc.detail, PROTOCOL_STATUS.get(exc.code, 400))


def status_of(exc: ServiceError) -> int:
    """The HTTP status for a refusal."""
    if isinstance(exc, ApiError):
        return exc.status
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def error_response(exc: ServiceError) -> Response:
    """The JSON response for a refusal."""
    body = {"error": {"code": exc.code, "message": exc.message}}
    if exc.hint:
        body["error"]["hint"] = exc.hint
    resp = jsonify(body)
    resp.status_code = status_of(exc)
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

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return error_response(exc)

    @app.errorhandler(ProtocolError)
    def _protocol_error(exc: ProtocolError) -> Response:
        return error_response(ApiError.from_protocol(exc))

    @app.errorhandler(SecurityError)
    def _host_not_allowed(exc: SecurityError) -> Response:
        # Werkzeug raises it for a Host header outside TRUSTED_HOSTS (app.py); nothing
        # here may read request.host, which would raise again.
        return error_response(
            ApiError(
                "host_not_allowed",
                "This service does not answer to that host name.",
                400,
                "Use the service's public URL; operators list other names in "
                "DEVICETRUST_TRUSTED_HOSTS (docs/deploy.md).",
            )
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | HTTPException:
        status = exc.code or 400
        if not wants_json():
            return exc
        return error_response(
            ApiError(HTTP_CODES.get(status, f"http_{status}"), exc.description or "", status)
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # %r: a path holding a newline (%0a) must not start a forged line in a text log.
        log.exception("unhandled error on %s %r", request.method[:16], request.path[:300])
        resp = jsonify({"error": {"code": "internal", "message": "internal error"}})
        resp.status_code = 500
        return resp


__all__ = ["PROTOCOL_CODES", "ApiError", "register_error_handlers"]
