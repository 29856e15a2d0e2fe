"""Re-authentication tokens: single-use, rotating, bound to one device key (§17 of the spec).

After an upstream sign-in, the service gives the device a *grant*: a random
token, server-signed and sealed to the device's box key exactly like a notice
(§14), with its own signature context. The device presents the token inside
the signed ``data`` of its next ``authenticate`` answer (``{"reauth": TOKEN}``),
so the token is worth nothing without the device's signing key; the service
spends it and seals the successor grant in the same exchange.

Construction::

    payload   = canonical JSON of the grant fields
    signature = Ed25519(server_key, GRANT_CONTEXT || payload)
    sealed    = epk || nonce || crypto_box(signature || payload, nonce, device_box_key, esk)

The service stores only :func:`token_hash`: SHA-256 over a context, the device
id and its signing key, and the token, so a stored hash matches only when the
same device key presents the token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from nacl.public import Box, PrivateKey
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.challenge import key_id
from trust_protocol.encoding import b64e, require
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import open_signed, seal_signed

VERSION = 1
GRANT_CONTEXT = b"devicetrust/v1/reauth-grant\x00"
HASH_CONTEXT = b"devicetrust/v1/reauth-token\x00"
KIND = "reauth"
TOKEN_BYTES = 32
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
EPK_SIZE = 32
NONCE_SIZE = Box.NONCE_SIZE  # 24
MAC_SIZE = 16
SIG_SIZE = 64
MAX_PAYLOAD = 1024
MAX_SEALED = EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + MAX_PAYLOAD
MAX_LIFETIME = 366 * 86400
MAX_TIMESTAMP = 2**53 - 1
MAX_ID = 64
FIELDS = {"v", "kind", "kid", "to", "challenge", "family", "token", "issued_at", "expires_at"}
DATA_KEY = "reauth"  # the member of an authenticate answer's data that carries a token


def new_token() -> str:
    """A fresh token: 32 random bytes, unpadded base64url (43 characters)."""
    return b64e(secrets.token_bytes(TOKEN_BYTES))


def token_hash(token: str, device_id: str, sign_key: bytes) -> str:
    """The stored form of a token: SHA-256 hex, bound to the device id and signing key."""
    if not TOKEN_PATTERN.fullmatch(token) or len(sign_key) != 32:
        raise ProtocolError("malformed", "not a re-authentication token")
    device = device_id.encode()
    return hashlib.sha256(
        HASH_CONTEXT + struct.pack(">H", len(device)) + device + sign_key + token.encode()
    ).hexdigest()


def presented(data: dict[str, Any]) -> str | None:
    """The token an answer's signed ``data`` carries, None if none; ``malformed`` if bad."""
    if DATA_KEY not in data:
        return None
    token = data[DATA_KEY]
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        raise ProtocolError("malformed", "data.reauth must be a 43-character token")
    return token


def _timestamp(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def _short(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable()


@dataclass(frozen=True)
class Grant:
    """One grant: the token for device ``to``, issued in the sign-in of ``challenge``."""

    kid: str
    to: str
    challenge: str
    family: str
    token: str
    issued_at: int
    expires_at: int

    def validate(self) -> None:
        """Check every field against the spec, or raise ``malformed``."""
        for name in ("kid", "to", "challenge", "family"):
            if not _short(getattr(self, name)):
                raise ProtocolError("malformed", f"{name} must be 1-{MAX_ID} printable characters")
        if not isinstance(self.token, str) or not TOKEN_PATTERN.fullmatch(self.token):
            raise ProtocolError("malformed", "token must be 43 base64url characters")
        if not (_timestamp(self.issued_at) and _timestamp(self.expires_at)):
            raise ProtocolError("malformed", "issued_at and expires_at must be integer seconds")
        if not 0 < self.expires_at - self.issued_at <= MAX_LIFETIME:
            raise ProtocolError("malformed", "expires_at must be within 366 days after issued_at")

    def to_json(self) -> dict[str, Any]:
        """The signed payload's fields."""
        return {
            "v": VERSION,
            "kind": KIND,
            "kid": self.kid,
            "to": self.to,
            "challenge": self.challenge,
            "family": self.family,
            "token": self.token,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }


def seal_grant(
    grant: Grant,
    signing_key: SigningKey,
    device_box_key: bytes,
    *,
    ephemeral_key: PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``grant`` with the server key and seal it to the device's box key.

    ``ephemeral_key`` and ``nonce`` are for test vectors only.
    """
    grant.validate()
    payload = encoding.dumps(grant.to_json())
    return seal_signed(
        payload,
        GRANT_CONTEXT,
        signing_key,
        device_box_key,
        ephemeral_key=ephemeral_key,
        nonce=nonce,
    )


def open_grant(
    sealed: bytes, box_key: PrivateKey, server_key: VerifyKey, device_id: str, *, now: float
) -> Grant:
    """Open, verify and parse a sealed grant addressed to ``device_id``.

    In this order: size (``too_large``/``malformed``), the box (``box_open_failed``),
    the server signature (``bad_grant_signature``), strict canonical JSON and
    fields (``malformed``, ``unsupported_version``), the key id, the recipient
    (``grant_wrong_device``) and expiry (``grant_expired``).
    """
    payload = open_signed(
        sealed,
        box_key,
        server_key,
        context=GRANT_CONTEXT,
        max_payload=MAX_PAYLOAD,
        what="grant",
        bad_signature="bad_grant_signature",
    )
    obj = encoding.loads(payload, max_size=MAX_PAYLOAD)
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "grant payload must be an object")
    version = require(obj, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"grant version {version}")
    if set(obj) != FIELDS or obj.get("kind") != KIND:
        raise ProtocolError("malformed", "grant fields must be exactly " + str(sorted(FIELDS)))
    if encoding.dumps(obj) != payload:
        raise ProtocolError("malformed", "grant payload is not canonical JSON")
    grant = Grant(
        kid=require(obj, "kid", str),
        to=require(obj, "to", str),
        challenge=require(obj, "challenge", str),
        family=require(obj, "family", str),
        token=require(obj, "token", str),
        issued_at=require(obj, "issued_at", int),
        expires_at=require(obj, "expires_at", int),
    )
    grant.validate()
    if grant.kid != key_id(server_key):
        raise ProtocolError("bad_grant_signature", "grant names another signing key")
    if grant.to != device_id:
        raise ProtocolError("grant_wrong_device")
    if now >= grant.expires_at:
        raise ProtocolError("grant_expired")
    return grant
