"""The signed poll: a device asks for its notices without a challenge round trip.

A poll is ``{"v": 1, "device_id": ..., "time": <unix seconds>}`` as canonical
JSON, signed by the device's registered Ed25519 key under its own context::

    signature = Ed25519(device_sign_key, POLL_CONTEXT || payload)

sent as ``{"poll": b64url(payload), "signature": b64url(signature)}``. The
service accepts it within ±``window`` seconds of its clock (``docs/protocol.md``
§14.4). A poll can be replayed within the window, but the reply carries only
notices sealed to the device's own box key, so a replay learns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from trust_protocol import encoding
from trust_protocol.encoding import b64d, b64e, require
from trust_protocol.errors import ProtocolError
from trust_protocol.strict_json import printable_id

VERSION = 1
POLL_CONTEXT = b"devicetrust/v1/poll\x00"
MAX_POLL = 512  # bytes of the JSON request body
MAX_PAYLOAD = 256
MAX_ID = 64
FIELDS = {"v", "device_id", "time"}


@dataclass(frozen=True)
class Poll:
    """A parsed, not yet verified poll."""

    device_id: str
    time: int
    payload: bytes
    signature: bytes


def sign_poll(device_id: str, signing_key: SigningKey, now: int) -> dict[str, str]:
    """The JSON body of a poll for ``device_id`` at ``now``."""
    payload = encoding.dumps({"v": VERSION, "device_id": device_id, "time": int(now)})
    signature = signing_key.sign(POLL_CONTEXT + payload).signature
    return {"poll": b64e(payload), "signature": b64e(signature)}


def parse_poll(body: bytes) -> Poll:
    """Parse a poll request body strictly (``malformed``/``too_large``); no signature check."""
    obj = encoding.loads(body, max_size=MAX_POLL)
    if not isinstance(obj, dict) or set(obj) != {"poll", "signature"}:
        raise ProtocolError("malformed", 'send {"poll": ..., "signature": ...}')
    payload = b64d(require(obj, "poll", str), field="poll")
    signature = b64d(require(obj, "signature", str), length=64, field="signature")
    fields = encoding.loads(payload, max_size=MAX_PAYLOAD)
    if not isinstance(fields, dict):
        raise ProtocolError("malformed", "poll payload must be an object")
    version = require(fields, "v", int)
    if version != VERSION:
        raise ProtocolError("unsupported_version", f"poll version {version}")
    if set(fields) != FIELDS or encoding.dumps(fields) != payload:
        raise ProtocolError("malformed", "poll payload must be canonical {v, device_id, time}")
    device_id = require(fields, "device_id", str)
    time = require(fields, "time", int)
    if not 0 < len(device_id) <= MAX_ID or not 0 <= time <= 2**53 - 1:
        raise ProtocolError("malformed", "poll device_id or time out of range")
    printable_id(device_id, max_length=MAX_ID)
    return Poll(device_id, time, payload, signature)


def verify_poll(poll: Poll, sign_key: bytes, *, now: float, window: float) -> None:
    """Check the device signature (``bad_poll_signature``) and the time (``poll_expired``)."""
    try:
        VerifyKey(sign_key).verify(POLL_CONTEXT + poll.payload, poll.signature)
    except BadSignatureError as exc:
        raise ProtocolError("bad_poll_signature") from exc
    if abs(poll.time - now) > window:
        raise ProtocolError("poll_expired")


def poll_json(poll: Poll) -> dict[str, Any]:
    """The poll's fields, for logs and tests."""
    return {"device_id": poll.device_id, "time": poll.time}
