"""Enroll ceremony, agent half: register this device with a service using a one-time code.

The service half is ``idp_service/devices/enroll.py``. Steps: fetch the service's
identity and pin its challenge-signing key; ask for a ``register`` challenge and
verify it with that key; answer it with this device's public keys, platform
identifiers and the code, sealed to the challenge's box key; store what the
service decided.
"""

from __future__ import annotations

import time
from pathlib import Path

from nacl.signing import VerifyKey

from agent import __version__, http_client, platform_ids, state
from agent.config import AgentConfig, PinMismatch, check_pin
from agent.keys import load_or_create
from agent.update import fetch_update_key
from trust_protocol.challenge import Challenge, parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d
from trust_protocol.response import ResponseBody, seal_response


class EnrollError(Exception):
    """Enrollment failed; ``code`` is the service's error code (or a local one)."""

    def __init__(self, code: str, message: str, hint: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status  # the service's HTTP status, 0 when it did not answer


REGISTER_PATH = "/agent/v1/register"


def fetch_server(server_url: str, config: AgentConfig | None = None) -> dict:
    """``GET <server_url>/agent/v1/server``: the identity the agent pins at enrollment.

    With a ``server_key_fingerprint`` in ``config``, a service presenting another
    key is refused (``server_key_mismatch``) before anything else is sent to it.
    """
    try:
        info = http_client.request("GET", server_url + "/agent/v1/server")
        b64d(info["server_key"], length=32, field="server_key")
    except http_client.ServerError as exc:
        raise EnrollError(exc.code, exc.message, exc.hint) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise EnrollError(
            "bad_server", f"{server_url} is not a devicetrust service: {exc}"
        ) from None
    if config is not None:
        try:
            check_pin(info["server_key"], server_url, config)
        except PinMismatch as exc:
            raise EnrollError(exc.code, exc.message, exc.hint) from None
    return info


def verify_key_of(info: dict) -> VerifyKey:
    """The challenge-signing key a server's identity document names."""
    return VerifyKey(b64d(info["server_key"], length=32, field="server_key"))


def submit_registration(
    state_dir: Path,
    keys: DeviceKeys,
    server_url: str,
    info: dict,
    token: str,
    challenge: Challenge,
    code: str | None,
) -> state.Enrollment:
    """Answer a verified ``register`` challenge, POST it to the service, store the result.

    ``code`` is the one-time enrollment code (sealed inside the box, never sent
    otherwise), or None for a registration the service vouches for by other
    means (an identity broker's signed subject on the login page).
    """
    body = ResponseBody(
        challenge_token=token,
        device=keys.public_json(),
        platform=platform_ids.platform_json(),
        agent_version=__version__,
        agent_clock=time.time(),
        data={} if code is None else {"enrollment_code": code.strip()},
    )
    envelope = seal_response(body, challenge, keys)
    try:
        result = http_client.request("POST", server_url + REGISTER_PATH, envelope)
    except http_client.ServerError as exc:
        raise EnrollError(exc.code, exc.message, exc.hint, exc.status) from None
    enrollment = state.Enrollment(
        server_url=server_url,
        server_key=info["server_key"],
        kid=info.get("kid", ""),
        origins=[str(o) for o in info.get("origins", [])],
        agent_ports=[int(p) for p in info.get("agent_ports", [])],
        user=str(result.get("user", "")),
        state=str(result.get("state", "")),
        enrolled_at=time.time(),
        update_key=fetch_update_key(server_url),
    )
    state.save(state_dir, enrollment)
    return enrollment


def enroll(
    state_dir: Path, server_url: str, code: str, config: AgentConfig | None = None
) -> state.Enrollment:
    """Run the ceremony and return the stored enrollment (``config``: the key pin, if any)."""
    server_url = server_url.rstrip("/")
    keys, _ = load_or_create(state_dir)
    existing = state.load(state_dir)
    if existing is not None:
        raise EnrollError(
            "already_enrolled",
            f"this device is already enrolled with {existing.server_url}",
            "Run devicetrust-agent status. To start over, move the state directory away.",
        )
    info = fetch_server(server_url, config)
    try:
        issued = http_client.request(
            "POST", server_url + "/agent/v1/challenges", b'{"purpose":"register"}'
        )
    except http_client.ServerError as exc:
        raise EnrollError(exc.code, exc.message, exc.hint) from None
    challenge = parse_challenge(issued.get("challenge"), verify_key_of(info))
    if challenge.purpose != "register":
        raise EnrollError("wrong_purpose", "the service sent a challenge for another ceremony")
    return submit_registration(
        state_dir, keys, server_url, info, issued["challenge"], challenge, code
    )
