"""Authenticate ceremony, agent half: answer a login challenge the pinned service signed.

The service half is ``idp_service/signin/authenticate.py``. The agent checks that the
challenge is signed by the key pinned at enrollment, that it is for
``authenticate``, that the requesting browser origin is one the challenge
allows, and that it is fresh by this device's clock (within
``CLOCK_TOLERANCE``). It then seals its answer to the challenge's own box key,
returns it to the browser, and also POSTs it straight to the challenge's
callback URL so the login does not depend on the browser.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import __version__, http_client, platform_ids, reauth
from agent.state import Enrollment
from trust_protocol.challenge import Challenge, parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.errors import ProtocolError
from trust_protocol.response import ResponseBody, seal_response

log = logging.getLogger(__name__)

CLOCK_TOLERANCE = 150  # seconds either side, as Kolide's launcher allows


class Refusal(Exception):
    """The agent will not answer this challenge; ``code`` says why."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Answer:
    """A sealed response and where to post it directly."""

    envelope: bytes
    challenge: Challenge


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL (what browsers send as Origin)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def answer(
    token: object,
    *,
    origin: str | None,
    enrollment: Enrollment,
    keys: DeviceKeys,
    purposes: tuple[str, ...] = ("authenticate",),
    now: float | None = None,
    reauth_token: str | None = None,
) -> Answer:
    """Verify a challenge for the requesting ``origin`` and seal this device's answer.

    ``reauth_token``, the device's re-authentication token (``agent/reauth.py``), goes
    inside the signed answer's ``data``.
    """
    try:
        challenge = parse_challenge(token, enrollment.verify_key)
    except ProtocolError as exc:
        if exc.code in ("bad_challenge_signature", "challenge_unknown"):
            raise Refusal(
                "unknown_server",
                "This challenge is not from the service this device is enrolled with.",
            ) from None
        raise Refusal(exc.code, exc.detail, 400) from None
    if challenge.purpose not in purposes:
        raise Refusal("wrong_purpose", f"challenge is for {challenge.purpose!r}")
    if origin is None or origin not in challenge.origins:
        raise Refusal("origin_not_allowed", "This web page may not ask this device to sign in.")
    if origin_of(challenge.callback) != enrollment.server_origin:
        raise Refusal("bad_callback", "The challenge's callback is not the enrolled service.")
    now = time.time() if now is None else now
    if now > challenge.expires_at + CLOCK_TOLERANCE:
        raise Refusal("challenge_expired", "The challenge has expired; reload the page.", 410)
    if now < challenge.issued_at - CLOCK_TOLERANCE:
        raise Refusal(
            "clock_skew", "This device's clock is far behind the service's; fix the clock.", 400
        )
    body = ResponseBody(
        challenge_token=token,  # type: ignore[arg-type]  # verified str above
        device=keys.public_json(),
        platform=platform_ids.platform_json(),
        agent_version=__version__,
        agent_clock=now,
        data={"reauth": reauth_token} if reauth_token else {},
    )
    return Answer(seal_response(body, challenge, keys), challenge)


def post_callback(
    ans: Answer,
    *,
    background: bool = True,
    state_dir: Path | None = None,
    keys: DeviceKeys | None = None,
    enrollment: Enrollment | None = None,
) -> threading.Thread | None:
    """POST the answer to the challenge's callback URL (in a thread by default).

    With ``state_dir``, ``keys`` and ``enrollment``, a re-authentication grant the
    service issued in this sign-in is collected and stored (``agent/reauth.py``).
    """

    def _post() -> None:
        reply: dict[str, Any] | None = None
        replayed = False
        try:
            reply = http_client.request("POST", ans.challenge.callback, ans.envelope, timeout=10)
            log.info("callback delivered for challenge %s", ans.challenge.id_text[:8])
        except http_client.ServerError as exc:
            # challenge_replayed means the browser's copy won the race: not an error.
            replayed = exc.code == "challenge_replayed"
            level = logging.INFO if replayed else logging.WARNING
            log.log(level, "callback refused: %s", exc.code)
        if state_dir is not None and keys is not None and enrollment is not None:
            if reply is not None or replayed:
                reauth.collect(
                    state_dir,
                    reply,
                    keys=keys,
                    enrollment=enrollment,
                    challenge_id=ans.challenge.id_text,
                )

    if not background:
        _post()
        return None
    thread = threading.Thread(target=_post, name="callback", daemon=True)
    thread.start()
    return thread
