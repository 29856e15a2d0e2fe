"""Byte encodings used on the wire: unpadded base64url and strict, bounded JSON.

Every field that carries bytes is base64url without padding (RFC 4648 section 5).
JSON from the other side is parsed with hard limits, duplicate keys refused, and
non-finite numbers refused, so that two implementations can never read one
message two ways.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from trust_protocol import strict_json
from trust_protocol.errors import ProtocolError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MAX_JSON_DEPTH = 16


def b64e(data: bytes) -> str:
    """Encode bytes as unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SIXBITS = {ch: i for i, ch in enumerate(_ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64d(text: object, *, length: int | None = None, field: str = "value") -> bytes:
    """Decode unpadded base64url, refusing padding, other alphabets and wrong lengths.

    Only the canonical spelling of a value is accepted: the unused low bits of
    the last symbol must be zero, so no two strings decode to the same bytes.
    """
    # fullmatch, not match: "$" would also match before a trailing newline.
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ProtocolError("malformed", f"{field} is not unpadded base64url")
    rem = len(text) % 4
    if rem == 1:
        raise ProtocolError("malformed", f"{field} is not unpadded base64url")
    if rem and _SIXBITS[text[-1]] & (0x0F if rem == 2 else 0x03):
        raise ProtocolError("malformed", f"{field} is not canonical base64url")
    padded = (text + "=" * (-len(text) % 4)).encode("ascii").translate(_TO_STANDARD)
    try:
        raw = binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the regex guards this
        raise ProtocolError("malformed", f"{field} is not base64url") from exc
    if length is not None and len(raw) != length:
        raise ProtocolError("malformed", f"{field} must be {length} bytes")
    return raw


def dumps(obj: Any) -> bytes:
    """Serialise to compact, key-sorted UTF-8 JSON (the form this side emits)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str, *, max_size: int) -> Any:
    """Parse an untrusted protocol message: :func:`trust_protocol.strict_json.loads`.

    ``max_size`` counts UTF-8 bytes. Refused as ``malformed``: invalid UTF-8 or
    JSON, a byte-order mark, duplicate object keys, ``NaN``/``Infinity`` and
    numbers that overflow a double, strings holding lone surrogates, and more than
    ``MAX_JSON_DEPTH`` nested containers. Oversized input is ``too_large``.
    """
    return strict_json.loads(data, max_size=max_size, max_depth=MAX_JSON_DEPTH)


def require(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch ``obj[key]`` and check its JSON type, or raise ``malformed``."""
    if not isinstance(obj, dict) or key not in obj:
        raise ProtocolError("malformed", f"missing field {key!r}")
    value = obj[key]
    # bool is an int in Python; never accept it where a number is expected.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError("malformed", f"field {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise ProtocolError("malformed", f"field {key!r} has the wrong type")
    return value
