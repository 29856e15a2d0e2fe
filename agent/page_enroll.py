"""Enrollment asked for by the login page: the local channel's ``POST /v1/enroll``.

When the login page finds this agent not enrolled (``not_enrolled``), or the
service does not know this device (``device_unknown``), the person types the
enrollment code from IT into the page. The page gets a ``register`` challenge
from its service and hands ``{"challenge", "code"}`` to this endpoint; the agent
then runs the usual enroll ceremony (``agent/enroll.py``) with that service.

A web page must not be able to tie this device to a server of its choosing, so
the agent decides *which* service it enrolls with, never the page:

* **not enrolled**: only with a service this agent was configured for locally
  (``devicetrust-agent run --service URL``, by whoever installed it). The page's
  ``Origin`` must be that service's origin (https, or http on a loopback host),
  the challenge must verify under the key the agent fetches from that service,
  and its callback must be that service's registration endpoint. Without such a
  setting the page cannot enroll this agent at all; the person uses the
  terminal (``devicetrust-agent enroll URL CODE``), which is a local decision.
* **enrolled**: only with the service it is enrolled with, under the key pinned
  at enrollment (re-registration of a device that service forgot). Never with
  another server: an enrolled agent is never re-pointed.

Attempts are rate-limited (:class:`AttemptGate`), one runs at a time, and the
code is never logged; it travels only inside the sealed response.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import enroll as ceremony
from agent import state
from agent.authenticate import CLOCK_TOLERANCE, origin_of
from agent.config import AgentConfig
from agent.origins import page_origin_ok, service_url
from trust_protocol.challenge import MAX_TOKEN_SIZE, Challenge, parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import loads
from trust_protocol.errors import ProtocolError

log = logging.getLogger(__name__)

MAX_REQUEST = 16 * 1024
MAX_CODE = 64
MAX_ATTEMPTS = 5  # enrollment attempts ...
ATTEMPT_WINDOW = 60.0  # ... per this many seconds
# Letters, digits, spaces and dashes: what IT hands out (ABCD-EFGH-JKLM-NPQR).
CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]*")


class EnrollRefusal(Exception):
    """The agent will not enroll for this request; ``code`` says why."""

    def __init__(self, code: str, message: str, status: int = 400, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.hint = hint

    def to_json(self) -> dict[str, Any]:
        """The local channel's error body."""
        err = {"code": self.code, "message": self.message}
        if self.hint:
            err["hint"] = self.hint
        return {"error": err}


@dataclass(frozen=True)
class EnrollRequest:
    """A parsed ``/v1/enroll`` body: the challenge token and the code (None: no code)."""

    challenge: str
    code: str | None


def parse_enroll_request(raw: bytes) -> EnrollRequest:
    """Parse ``{"challenge": "<token>", "code": "<code>"}``; ``code`` may be absent or null.

    Strict JSON (no duplicate members, bounded size and depth); unknown members
    are ignored. Raises :class:`EnrollRefusal` with ``too_large``, ``malformed``
    or ``enroll_code_invalid``, and nothing else.
    """
    try:
        obj = loads(raw, max_size=MAX_REQUEST)
    except ProtocolError as exc:
        status = 413 if exc.code == "too_large" else 400
        raise EnrollRefusal(
            exc.code, 'Send {"challenge": "<token>", "code": "<code>"}.', status
        ) from None
    if not isinstance(obj, dict):
        raise EnrollRefusal("malformed", 'Send {"challenge": "<token>", "code": "<code>"}.')
    token = obj.get("challenge")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_SIZE:
        raise EnrollRefusal("malformed", "The challenge must be a token string.")
    code = obj.get("code")
    if code is None:
        return EnrollRequest(token, None)
    if not isinstance(code, str):
        raise EnrollRefusal("malformed", "The code must be a string.")
    code = code.strip()
    if not 0 < len(code) <= MAX_CODE or not CODE_PATTERN.fullmatch(code):
        raise EnrollRefusal(
            "enroll_code_invalid",
            "That does not look like an enrollment code.",
            400,
            "Codes have letters, digits and dashes, like ABCD-EFGH-JKLM-NPQR.",
        )
    return EnrollRequest(token, code)


class AttemptGate:
    """At most ``limit`` attempts per ``window`` seconds, and one at a time."""

    def __init__(self, limit: int = MAX_ATTEMPTS, window: float = ATTEMPT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.recent: deque[float] = deque()
        self.lock = threading.Lock()
        self.busy = threading.Lock()

    def admit(self, now: float | None = None) -> None:
        """Count an attempt, or raise ``too_many_requests``."""
        now = time.monotonic() if now is None else now
        with self.lock:
            while self.recent and now - self.recent[0] >= self.window:
                self.recent.popleft()
            if len(self.recent) >= self.limit:
                wait = int(self.window - (now - self.recent[0])) + 1
                raise EnrollRefusal(
                    "too_many_requests",
                    f"Too many enrollment attempts. Wait {wait} seconds, then try again.",
                    429,
                )
            self.recent.append(now)


@dataclass(frozen=True)
class EnrollOutcome:
    """What the page learns after a successful enrollment."""

    enrollment: state.Enrollment

    def to_json(self) -> dict[str, Any]:
        """The ``/v1/enroll`` answer."""
        e = self.enrollment
        return {"status": "enrolled", "state": e.state, "user": e.user, "server_url": e.server_url}


def allowed_origin(
    origin: str | None, enrollment: state.Enrollment | None, services: tuple[str, ...]
) -> bool:
    """May a page of ``origin`` ask this agent to enroll (before any network traffic)?"""
    if origin is None or not page_origin_ok(origin):
        return False
    if enrollment is not None:
        return origin in {*enrollment.origins, enrollment.server_origin}
    return any(origin_of(url) == origin for url in services)


def _check_challenge(challenge: Challenge, origin: str, server_url: str, now: float) -> None:
    if challenge.purpose != "register":
        raise EnrollRefusal("wrong_purpose", f"challenge is for {challenge.purpose!r}", 403)
    if origin not in challenge.origins:
        raise EnrollRefusal(
            "origin_not_allowed", "This web page may not ask this device to enroll.", 403
        )
    if challenge.callback != server_url + ceremony.REGISTER_PATH:
        raise EnrollRefusal(
            "bad_callback", "The challenge's callback is not the service's registration.", 403
        )
    if now > challenge.expires_at + CLOCK_TOLERANCE:
        raise EnrollRefusal("challenge_expired", "The challenge has expired; try again.", 410)
    if now < challenge.issued_at - CLOCK_TOLERANCE:
        raise EnrollRefusal(
            "clock_skew", "This device's clock is far behind the service's; fix the clock.", 400
        )


def _parse(token: str, info: dict[str, Any]) -> Challenge:
    try:
        return parse_challenge(token, ceremony.verify_key_of(info))
    except ProtocolError as exc:
        if exc.code in ("bad_challenge_signature", "challenge_unknown"):
            raise EnrollRefusal(
                "unknown_server", "This challenge is not from the expected service.", 403
            ) from None
        raise EnrollRefusal(exc.code, exc.detail, 413 if exc.code == "too_large" else 400) from None


def enroll_from_page(
    req: EnrollRequest,
    *,
    origin: str,
    enrollment: state.Enrollment | None,
    services: tuple[str, ...],
    keys: DeviceKeys,
    state_dir: Path,
    now: float | None = None,
    config: AgentConfig | None = None,
) -> EnrollOutcome:
    """Check the request against this agent's own idea of its service, then enroll.

    The caller has already checked ``allowed_origin`` and the rate limit.
    Raises :class:`EnrollRefusal`; on any refusal nothing is stored.
    """
    now = time.time() if now is None else now
    if enrollment is not None:
        # Re-registration with the service this agent is pinned to, under the pinned key.
        server_url = enrollment.server_url
        info: dict[str, Any] = {
            "server_key": enrollment.server_key,
            "kid": enrollment.kid,
            "origins": enrollment.origins,
            "agent_ports": enrollment.agent_ports,
        }
    else:
        matches = [url for url in services if origin_of(url) == origin]
        if not matches:  # pragma: no cover - allowed_origin ran first
            raise EnrollRefusal("origin_not_allowed", "This page may not enroll this device.", 403)
        server_url = matches[0]
        try:
            info = ceremony.fetch_server(server_url, config)
        except ceremony.EnrollError as exc:
            if exc.code == "server_key_mismatch":
                log.error("refused to enroll: %s %s", exc.message, exc.hint)
                raise EnrollRefusal(
                    exc.code,
                    "This device is configured for another key of the sign-in service; "
                    "it will not enroll. Ask IT.",
                    502,
                ) from None
            raise EnrollRefusal(
                exc.code, "The sign-in service could not be reached: " + exc.message, 502
            ) from None
        if str(info.get("public_url", "")).rstrip("/") != server_url:
            raise EnrollRefusal(
                "bad_server", "The service names another public URL than the one configured.", 502
            )
    challenge = _parse(req.challenge, info)
    _check_challenge(challenge, origin, server_url, now)
    try:
        stored = ceremony.submit_registration(
            state_dir, keys, server_url, info, req.challenge, challenge, req.code
        )
    except ceremony.EnrollError as exc:
        status = exc.status if 400 <= exc.status < 500 else 502
        raise EnrollRefusal(exc.code, exc.message, status, exc.hint) from None
    log.info("enrolled from the login page with %s: %s", server_url, stored.state)
    return EnrollOutcome(stored)


__all__ = [
    "AttemptGate",
    "EnrollOutcome",
    "EnrollRefusal",
    "EnrollRequest",
    "allowed_origin",
    "enroll_from_page",
    "page_origin_ok",
    "parse_enroll_request",
    "service_url",
]
