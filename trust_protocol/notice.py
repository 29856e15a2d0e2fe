"""Notices: server-signed messages sealed to one device's registered box key.

Protocol v1 sends one kind, ``approval``: a new device of the same user waits
for approval, and this notice carries the verification code to an already
trusted device (``docs/protocol.md`` §14). The server never keeps the clear
code; it seals the notice once at issue time and stores only the sealed bytes.

Construction (the same box as a response, §6.2, pointed the other way)::

    payload   = canonical JSON of the notice fields
    signature = Ed25519(server_key, NOTICE_CONTEXT || payload)
    sealed    = epk || nonce || crypto_box(signature || payload, nonce, device_box_key, esk)

``esk``/``epk`` is a fresh X25519 pair per notice and ``nonce`` 24 random bytes.
The box hides the code and binds the bytes to the device's key; the signature
inside proves the server wrote it (the box alone is anonymous), and the signed
``to`` field stops a notice being re-sealed to another device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.challenge import key_id
from trust_protocol.encoding import require
from trust_protocol.errors import ProtocolError

VERSION = 1
NOTICE_CONTEXT = b"devicetrust/v1/notice\x00"
KINDS = ("approval",)
EPK_SIZE = 32
NONCE_SIZE = Box.NONCE_SIZE  # 24
MAC_SIZE = 16
SIG_SIZE = 64
MAX_PAYLOAD = 2048
MAX_SEALED = EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + MAX_PAYLOAD
MAX_LIFETIME = 24 * 3600  # seconds from issued_at to expires_at, at most
MAX_TIMESTAMP = 2**53 - 1
MAX_FIELD = 256
MAX_ID = 64
MAX_CODE = 32
FIELDS = {"v", "kind", "kid", "id", "to", "issued_at", "expires_at", "code", "device"}
DEVICE_FIELDS = {"hostname", "platform", "serial", "first_seen"}


def _timestamp(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def _short(value: object, limit: int, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


@dataclass(frozen=True)
class Notice:
    """One notice's content. ``device`` describes the new device that waits."""

    kind: str
    kid: str
    id: str
    to: str
    issued_at: int
    expires_at: int
    code: str
    device: dict[str, Any]

    def validate(self) -> None:
        """Check every field against the spec, or raise ``malformed``."""
        if self.kind not in KINDS:
            raise ProtocolError("malformed", f"unknown notice kind {self.kind!r}")
        for name, value, limit in (
            ("kid", self.kid, MAX_ID),
            ("id", self.id, MAX_ID),
            ("to", self.to, MAX_ID),
            ("code", self.code, MAX_CODE),
        ):
            if not _short(value, limit):
                raise ProtocolError("malformed", f"{name} must be 1-{limit} printable characters")
        if not (_timestamp(self.issued_at) and _timestamp(self.expires_at)):
            raise ProtocolError("malformed", "issued_at and expires_at must be integer seconds")
        if not 0 < self.expires_at - self.issued_at <= MAX_LIFETIME:
            raise ProtocolError("malformed", "expires_at must be within a day after issued_at")
        d = self.device
        if not isinstance(d, dict) or set(d) != DEVICE_FIELDS:
            raise ProtocolError(
                "malformed", "device must have exactly " + str(sorted(DEVICE_FIELDS))
            )
        for name in ("hostname", "platform", "serial"):
            if not _short(d[name], MAX_FIELD, optional=True):
                raise ProtocolError("malformed", f"device.{name} must be a short string or null")
        if not _timestamp(d["first_seen"]):
            raise ProtocolError("malformed", "device.first_seen must be integer seconds")

    def to_json(self) -> dict[str, Any]:
        """The signed payload's fields."""
        return {
            "v": VERSION,
            "kind": self.kind,
            "kid": self.kid,
            "id": self.id,
            "to": self.to,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "code": self.code,
            "device": dict(self.device),
        }


def seal_signed(
    payload: bytes,
    context: bytes,
    signing_key: SigningKey,
    device_box_key: bytes,
    *,
    ephemeral_key: PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``context + payload`` with the server key and seal signature and payload to a
    device's box key from a fresh ephemeral key: ``epk || box(signature || payload)``.

    The envelope of notices and of re-authentication grants (``trust_protocol/reauth.py``);
    ``ephemeral_key`` and ``nonce`` are for test vectors only.
    """
    signature = signing_key.sign(context + payload).signature
    eph = ephemeral_key or PrivateKey.generate()
    sealed = Box(eph, PublicKey(device_box_key)).encrypt(signature + payload, nonce)
    return bytes(eph.public_key) + bytes(sealed)


def open_signed(
    sealed: bytes,
    box_key: PrivateKey,
    server_key: VerifyKey,
    *,
    context: bytes,
    max_payload: int,
    what: str,
    bad_signature: str,
) -> bytes:
    """Open :func:`seal_signed`'s envelope and check the server signature; the payload.

    In this order: size (``too_large``/``malformed``), the box (``box_open_failed``), the
    signature over the exact payload bytes (``bad_signature``, the caller's code). ``what``
    names the message in the details.
    """
    if not isinstance(sealed, bytes | bytearray):
        raise ProtocolError("malformed", f"a sealed {what} is bytes")
    if len(sealed) > EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + max_payload:
        raise ProtocolError("too_large", f"sealed {what} is too large")
    if len(sealed) < EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + 2:
        raise ProtocolError("malformed", f"sealed {what} is too short")
    epk, rest = bytes(sealed[:EPK_SIZE]), bytes(sealed[EPK_SIZE:])
    try:
        inner = Box(box_key, PublicKey(epk)).decrypt(rest)
    except CryptoError as exc:
        raise ProtocolError("box_open_failed") from exc
    signature, payload = inner[:SIG_SIZE], inner[SIG_SIZE:]
    try:
        server_key.verify(context + payload, signature)
    except BadSignatureError as exc:
        raise ProtocolError(bad_signature) from exc
    return payload


def seal_notice(
    notice: Notice,
    signing_key: SigningKey,
    device_box_key: bytes,
    *,
    ephemeral_key: PrivateKey | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign ``notice`` with the server key and seal it to one device's box key.

    ``ephemeral_key`` and ``nonce`` are for test vectors only.
    """
    notice.validate()
    payload = encoding.dumps(notice.to_json())
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("too_large", "notice payload is too large")
    return seal_signed(
        payload,
        NOTICE_CONTEXT,
        signing_key,
        device_box_key,
        ephemeral_key=ephemeral_key,
        nonce=nonce,
    )


def open_notice(
    sealed: bytes, box_key: PrivateKey, server_key: VerifyKey, device_id: str, *, now: float
) -> Notice:
    """Open, verify and parse a sealed notice addressed to ``device_id``.

    In this order: size (``too_large``/``malformed``), the box
    (``box_open_failed``), the server signature over the exact payload bytes
    (``bad_notice_signature``), strict JSON and fields (``malformed``,
    ``unsupported_version``), the signing key id, the recipient
    (``notice_wrong_device``) and expiry against ``now`` (``notice_expired``).
    """
    payload = open_signed(
        sealed,
        box_key,
        server_key,
        context=NOTICE_CONTEXT,
        max_payload=MAX_PAYLOAD,
        what="notice",
        bad_signature="bad_notice_signature",
    )
    obj = encoding.loads(payload, max_size=MAX_PAYLOAD)
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "notice payload must be an object")
    version = require(obj, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"notice version {version}")
    if set(obj) != FIELDS:
        raise ProtocolError("malformed", "notice fields must be exactly " + str(sorted(FIELDS)))
    if encoding.dumps(obj) != payload:
        raise ProtocolError("malformed", "notice payload is not canonical JSON")
    notice = Notice(
        kind=require(obj, "kind", str),
        kid=require(obj, "kid", str),
        id=require(obj, "id", str),
        to=require(obj, "to", str),
        issued_at=require(obj, "issued_at", int),
        expires_at=require(obj, "expires_at", int),
        code=require(obj, "code", str),
        device=require(obj, "device", dict),
    )
    notice.validate()
    if notice.kid != key_id(server_key):
        raise ProtocolError("bad_notice_signature", "notice names another signing key")
    if notice.to != device_id:
        raise ProtocolError("notice_wrong_device")
    if now >= notice.expires_at:
        raise ProtocolError("notice_expired")
    return notice
