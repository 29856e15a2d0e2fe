"""The response: the device's signed answer to a challenge, inside a NaCl box.

Wire form (an *envelope*), UTF-8 JSON::

    {"v": 1, "cid": <challenge id>, "epk": <ephemeral X25519 public key>,
     "box": <24-byte nonce || crypto_box ciphertext>}

The box is sealed from a fresh ephemeral agent key to the challenge's own box
key. Its plaintext is ``signature (64 bytes) || body``, where ``body`` is UTF-8
JSON and ``signature = Ed25519(device_key, RESPONSE_CONTEXT || body)``.

:func:`open_response` performs every check that needs no database, in the
order published in ``docs/protocol.md``; :func:`check_registration` performs the
checks against the registry's record of the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey

from trust_protocol import encoding
from trust_protocol.challenge import MIN_ID_BYTES, Challenge, parse_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d, b64e, require
from trust_protocol.errors import ProtocolError
from trust_protocol.strict_json import printable_id

VERSION = 1
RESPONSE_CONTEXT = b"devicetrust/v1/response\x00"
NONCE_SIZE = Box.NONCE_SIZE
MAX_ENVELOPE_SIZE = 1024 * 1024  # reports carry facts; authenticate is far smaller
MAX_FIELD = 256
DEFAULT_MAX_SKEW = 300.0


@dataclass(frozen=True)
class ResponseBody:
    """What the agent asserts, before it is signed and boxed."""

    challenge_token: str
    device: dict[str, str]
    platform: dict[str, str]
    agent_version: str
    agent_clock: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The body object as it is serialised and signed."""
        return {
            "v": VERSION,
            "challenge": self.challenge_token,
            "device": self.device,
            "platform": self.platform,
            "agent": {"version": self.agent_version, "clock": self.agent_clock},
            "data": self.data,
        }


@dataclass(frozen=True)
class VerifiedResponse:
    """A response whose box, challenge signature and device signature all verified."""

    challenge: Challenge
    device_id: str
    sign_key: bytes
    box_key: bytes
    platform: dict[str, str]
    agent_version: str
    agent_clock: float
    clock_skew: float
    data: dict[str, Any]


@dataclass(frozen=True)
class RegisteredDevice:
    """The registry's view of a device, for :func:`check_registration`."""

    device_id: str
    sign_key: bytes
    state: str  # pending | trusted | denied | revoked | suspended
    owner_active: bool = True


def seal_response(
    body: ResponseBody,
    challenge: Challenge,
    keys: DeviceKeys,
    *,
    ephemeral_key: PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``body`` with the device key and box it to the challenge's key.

    ``ephemeral_key`` and ``nonce`` are for test vectors only; leave them unset and
    a fresh key and a random nonce are used.
    """
    body_bytes = encoding.dumps(body.to_json())
    signature = keys.signing_key.sign(RESPONSE_CONTEXT + body_bytes).signature
    eph = ephemeral_key or PrivateKey.generate()
    box = Box(eph, PublicKey(challenge.box_key))
    sealed = box.encrypt(signature + body_bytes, nonce)  # nonce || ciphertext
    envelope = {
        "v": VERSION,
        "cid": b64e(challenge.id),
        "epk": b64e(bytes(eph.public_key)),
        "box": b64e(bytes(sealed)),
    }
    return encoding.dumps(envelope)


def _string_map(obj: object, name: str) -> dict[str, str]:
    if not isinstance(obj, dict) or len(obj) > 32:
        raise ProtocolError("malformed", f"{name} must be an object of strings")
    for k, v in obj.items():
        if not isinstance(v, str) or len(k) > MAX_FIELD or len(v) > MAX_FIELD:
            raise ProtocolError("malformed", f"{name} must be an object of short strings")
    return obj


def _seconds(value: float) -> float:
    """A JSON number of seconds as a finite double, or ``malformed``."""
    try:
        seconds = float(value)
    except OverflowError as exc:  # an integer beyond the range of a double
        raise ProtocolError("malformed", "agent clock is out of range") from exc
    if not math.isfinite(seconds):
        raise ProtocolError("malformed", "agent clock is out of range")
    return seconds


def open_response(
    envelope: bytes | str,
    *,
    verify_key: VerifyKey,
    box_key_for: Callable[[bytes], PrivateKey | bytes],
    now: float,
    purposes: tuple[str, ...],
    max_skew: float = DEFAULT_MAX_SKEW,
    max_size: int = MAX_ENVELOPE_SIZE,
) -> VerifiedResponse:
    """Open and verify a response envelope, or raise :class:`ProtocolError`.

    Checks, in this order: size and JSON shape; version; the box opens with the
    key derived for ``cid``; the body parses; the echoed challenge carries this
    server's signature; its id equals ``cid``; its purpose is one of ``purposes``;
    the device signature verifies with the body's key; the challenge has not
    expired at ``now``; the agent clock is within ``max_skew`` of ``now``.
    """
    env = encoding.loads(envelope, max_size=max_size)
    if not isinstance(env, dict):
        raise ProtocolError("malformed", "envelope must be an object")
    version = require(env, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"envelope version {version}")
    cid = b64d(require(env, "cid", str), field="cid")
    if not MIN_ID_BYTES <= len(cid) <= 64:
        raise ProtocolError("malformed", "cid must carry 16 to 64 bytes")
    epk = b64d(require(env, "epk", str), length=32, field="epk")
    sealed = b64d(require(env, "box", str), field="box")
    if len(sealed) < NONCE_SIZE + 16 + 64:
        raise ProtocolError("malformed", "box is too short")

    secret = box_key_for(cid)
    raw_secret = bytes(secret) if isinstance(secret, PrivateKey) else secret
    try:
        # crypto_box_open: key agreement (X25519) then XSalsa20-Poly1305, as Box.decrypt does,
        # without deriving the per-challenge public key we do not need here.
        shared = nacl.bindings.crypto_box_beforenm(epk, raw_secret)
        plaintext = nacl.bindings.crypto_box_open_afternm(
            sealed[NONCE_SIZE:], sealed[:NONCE_SIZE], shared
        )
    except CryptoError as exc:
        raise ProtocolError("box_open_failed") from exc
    signature, body_bytes = plaintext[:64], plaintext[64:]

    body = encoding.loads(body_bytes, max_size=max_size)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "body must be an object")
    body_version = require(body, "v", int)
    if body_version != VERSION:
        raise ProtocolError("unsupported_version", f"body version {body_version}")
    challenge = parse_challenge(require(body, "challenge", str), verify_key)
    if challenge.id != cid:
        raise ProtocolError("challenge_mismatch")
    if challenge.purpose not in purposes:
        raise ProtocolError("wrong_purpose", f"challenge is for {challenge.purpose!r}")

    device = require(body, "device", dict)
    device_id = require(device, "id", str)
    if not 0 < len(device_id) <= 64:
        raise ProtocolError("malformed", "device id must be 1 to 64 characters")
    printable_id(device_id)  # no NULs or other control characters in an identifier
    sign_key = b64d(require(device, "sign_key", str), length=32, field="sign_key")
    box_key = b64d(require(device, "box_key", str), length=32, field="box_key")
    try:
        VerifyKey(sign_key).verify(RESPONSE_CONTEXT + body_bytes, signature)
    except (BadSignatureError, ValueError) as exc:
        raise ProtocolError("bad_device_signature") from exc

    if now >= challenge.expires_at:
        raise ProtocolError("challenge_expired")
    agent = require(body, "agent", dict)
    agent_version = require(agent, "version", str)
    if len(agent_version) > MAX_FIELD:
        raise ProtocolError("malformed", "agent version is too long")
    clock = _seconds(require(agent, "clock", (int, float)))
    skew = clock - now
    if abs(skew) > max_skew:
        raise ProtocolError("clock_skew", f"agent clock is off by {skew:+.0f} s")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "data must be an object")
    return VerifiedResponse(
        challenge=challenge,
        device_id=device_id,
        sign_key=sign_key,
        box_key=box_key,
        platform=_string_map(require(body, "platform", dict), "platform"),
        agent_version=agent_version,
        agent_clock=clock,
        clock_skew=skew,
        data=data,
    )


def check_binding(verified: VerifiedResponse, expected: str) -> None:
    """Refuse a response whose challenge is bound to another transaction."""
    import hmac

    if not hmac.compare_digest(verified.challenge.binding.encode(), expected.encode()):
        raise ProtocolError("binding_mismatch")


def check_registration(verified: VerifiedResponse, device: RegisteredDevice | None) -> None:
    """Judge a verified ``authenticate``/``report`` response against the registry.

    The order is: unknown device; key mismatch; revoked; denied; pending; owner
    inactive. A trusted device of an active owner passes.
    """
    import hmac

    if device is None or device.device_id != verified.device_id:
        raise ProtocolError("device_unknown")
    if not hmac.compare_digest(device.sign_key, verified.sign_key):
        raise ProtocolError("device_key_mismatch")
    state_codes = {
        "revoked": "device_revoked",
        "denied": "device_denied",
        "pending": "device_pending",
        "suspended": "device_suspended",
    }
    if device.state in state_codes:
        raise ProtocolError(state_codes[device.state])
    if device.state != "trusted":
        raise ProtocolError("device_unknown", f"device state {device.state!r}")
    if not device.owner_active:
        raise ProtocolError("owner_inactive")
