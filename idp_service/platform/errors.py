"""The service layer's own refusals: a stable code, a message for people, a hint.

Services (ceremonies, stores, policies) raise these; they never know about HTTP.
``idp_service/web/errors.py`` alone maps each kind to a status code, so the wire
answers stay exactly what clients already depend on. The codes are stable API:
``docs/api.md`` and ``docs/protocol.md`` list them.
"""

from __future__ import annotations

# What a person or a script should do next, per code (shown as ``hint``).
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


class ServiceError(Exception):
    """A request the service refuses, with a stable ``code``.

    Subclasses say what kind of refusal it is; the web layer turns the kind into
    an HTTP status. Raise the most specific kind.
    """

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint or HINTS.get(code, "")


class Invalid(ServiceError):
    """The input is malformed or breaks a rule (HTTP 400)."""


class Unauthenticated(ServiceError):
    """No valid credential was presented (HTTP 401)."""


class Forbidden(ServiceError):
    """The caller or the device is known but may not do this (HTTP 403)."""


class NotFound(ServiceError):
    """The thing named does not exist, or is not the caller's to see (HTTP 404)."""


class Conflict(ServiceError):
    """The request clashes with the current state: a replay, a duplicate (HTTP 409)."""


class Gone(ServiceError):
    """The thing existed but has expired or been used up (HTTP 410)."""


class TooLarge(ServiceError):
    """The input is larger than the service accepts (HTTP 413)."""


class Unsupported(ServiceError):
    """The input's media type or format is not one the service reads (HTTP 415)."""


class Unprocessable(ServiceError):
    """The input parses but cannot be acted on (HTTP 422)."""


class RateLimited(ServiceError):
    """Too many attempts; try again later (HTTP 429)."""


class Unavailable(ServiceError):
    """A dependency the request needs is not ready (HTTP 503)."""


__all__ = [
    "HINTS",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "RateLimited",
    "ServiceError",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "Unprocessable",
    "Unsupported",
]
