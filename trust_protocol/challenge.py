"""The challenge: a short-lived JSON statement signed by the server with Ed25519.

Wire form (a *challenge token*)::

    base64url(payload) "." base64url(signature)

where ``signature = Ed25519(server_key, CHALLENGE_CONTEXT || payload)`` and
``payload`` is UTF-8 JSON. The agent echoes the token byte for byte inside its
response, so the server can re-verify its own statement without storing it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.encoding import b64d, b64e, require
from trust_protocol.errors import ProtocolError

VERSION = 1
CHALLENGE_CONTEXT = b"devicetrust/v1/challenge\x00"
PURPOSES = ("register", "authenticate", "report")
MAX_LIFETIME = 120  # seconds from issued_at to expires_at, at most
MAX_TOKEN_SIZE = 8192
MIN_ID_BYTES = 16
MAX_ID_BYTES = 64
MAX_ORIGINS = 16
MAX_BINDING = 256
MAX_URL = 2048
MAX_KID = 64
MAX_TIMESTAMP = 2**53 - 1  # JSON integers every implementation reads exactly


def _is_timestamp(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def key_id(verify_key: VerifyKey | bytes) -> str:
    """Short, stable name of a server signing key: base64url of SHA-256[:8]."""
    raw = bytes(verify_key)
    return b64e(hashlib.sha256(raw).digest()[:8])


@dataclass(frozen=True)
class Challenge:
    """A challenge's content. Build one, then :func:`sign_challenge` it."""

    id: bytes
    purpose: str
    issued_at: int
    expires_at: int
    box_key: bytes
    origins: tuple[str, ...]
    callback: str
    binding: str
    kid: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    # Each property below delegates to an undecorated method: mutmut does not mutate
    # decorated functions (docs/testing.md, "Mutation testing").
    @property
    def id_text(self) -> str:
        """The challenge id as it appears on the wire (base64url)."""
        return self._id_text()

    def _id_text(self) -> str:
        return b64e(self.id)

    def to_json(self) -> dict[str, Any]:
        """The JSON object that is signed."""
        obj: dict[str, Any] = {
            "v": self.version,
            "id": b64e(self.id),
            "purpose": self.purpose,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "box_key": b64e(self.box_key),
            "origins": list(self.origins),
            "callback": self.callback,
            "binding": self.binding,
            "kid": self.kid,
        }
        if self.data:
            obj["data"] = self.data
        return obj

    def validate(self) -> None:
        """Check the invariants every challenge must hold, or raise ``malformed``."""
        if self.version != VERSION:
            raise ProtocolError("unsupported_version", f"challenge version {self.version}")
        if not MIN_ID_BYTES <= len(self.id) <= MAX_ID_BYTES:
            raise ProtocolError("malformed", "challenge id must carry 16 to 64 bytes")
        if self.purpose not in PURPOSES:
            raise ProtocolError("malformed", f"unknown purpose {self.purpose!r}")
        if not (_is_timestamp(self.issued_at) and _is_timestamp(self.expires_at)):
            raise ProtocolError("malformed", "issued_at and expires_at must be integer seconds")
        if not 0 < self.expires_at - self.issued_at <= MAX_LIFETIME:
            raise ProtocolError("malformed", "expires_at must be within 120 s after issued_at")
        if len(self.box_key) != 32:
            raise ProtocolError("malformed", "box_key must be 32 bytes")
        if len(self.origins) > MAX_ORIGINS or not all(
            isinstance(o, str) and 0 < len(o) <= MAX_URL for o in self.origins
        ):
            raise ProtocolError("malformed", "origins must be up to 16 non-empty strings")
        if not isinstance(self.callback, str) or not 0 < len(self.callback) <= MAX_URL:
            raise ProtocolError("malformed", "callback must be a URL")
        if not isinstance(self.binding, str) or len(self.binding) > MAX_BINDING:
            raise ProtocolError("malformed", "binding must be a string of at most 256 chars")
        if not isinstance(self.kid, str) or len(self.kid) > MAX_KID:
            raise ProtocolError("malformed", "kid must be a string of at most 64 chars")
        if not isinstance(self.data, dict):
            raise ProtocolError("malformed", "challenge data must be an object")


@dataclass(frozen=True)
class SignedChallenge:
    """A verified challenge together with its exact token."""

    challenge: Challenge
    token: str


def sign_challenge(challenge: Challenge, signing_key: SigningKey) -> str:
    """Sign ``challenge`` and return its token."""
    challenge.validate()
    payload = encoding.dumps(challenge.to_json())
    signature = signing_key.sign(CHALLENGE_CONTEXT + payload).signature
    return f"{b64e(payload)}.{b64e(signature)}"


def _refusal_code(payload: bytes, verify_key: VerifyKey) -> str:
    """Why an unverifiable token is refused: unknown key, or tampered with under ours."""
    try:
        claimed = encoding.loads(payload, max_size=MAX_TOKEN_SIZE).get("kid")
    except (ProtocolError, AttributeError):
        return "bad_challenge_signature"
    if isinstance(claimed, str) and claimed != key_id(verify_key):
        return "challenge_unknown"
    return "bad_challenge_signature"


def parse_challenge(token: object, verify_key: VerifyKey) -> Challenge:
    """Verify a challenge token's signature, then parse and validate its payload.

    Raises :class:`ProtocolError` with ``challenge_unknown`` when the token names
    another signing key (``kid``) and is not signed by ``verify_key`` -- another
    server's challenge, or one from a retired key -- ``bad_challenge_signature``
    when it claims this key but its signature fails (tampered), and ``malformed``
    or ``too_large`` otherwise.
    Expiry is *not* checked here: the caller knows its own clock and tolerance.
    """
    if not isinstance(token, str):
        raise ProtocolError("malformed", "challenge token must be a string")
    if len(token) > MAX_TOKEN_SIZE:
        raise ProtocolError("too_large", "challenge token is too large")
    parts = token.split(".")
    if len(parts) != 2:
        raise ProtocolError("malformed", "challenge token must be payload.signature")
    payload = b64d(parts[0], field="challenge payload")
    signature = b64d(parts[1], length=64, field="challenge signature")
    try:
        verify_key.verify(CHALLENGE_CONTEXT + payload, signature)
    except BadSignatureError as exc:
        raise ProtocolError(_refusal_code(payload, verify_key)) from exc
    obj = encoding.loads(payload, max_size=MAX_TOKEN_SIZE)
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "challenge payload must be an object")
    version = require(obj, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"challenge version {version}")
    origins = require(obj, "origins", list)
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise ProtocolError("malformed", "challenge data must be an object")
    challenge = Challenge(
        id=b64d(require(obj, "id", str), field="challenge id"),
        purpose=require(obj, "purpose", str),
        issued_at=require(obj, "issued_at", int),
        expires_at=require(obj, "expires_at", int),
        box_key=b64d(require(obj, "box_key", str), length=32, field="box_key"),
        origins=tuple(origins),
        callback=require(obj, "callback", str),
        binding=require(obj, "binding", str),
        kid=require(obj, "kid", str),
        data=data,
        version=version,
    )
    challenge.validate()
    return challenge
