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

from trust_protocol.errors import ProtocolError

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
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
    if not isinstance(text, str) or not _B64URL.match(text):
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError("malformed", f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise ProtocolError("malformed", f"non-finite number {name}")


def _depth(obj: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        raise ProtocolError("malformed", "JSON nested too deeply")
    if isinstance(obj, dict):
        for v in obj.values():
            _depth(v, level + 1)
    elif isinstance(obj, list):
        for v in obj:
            _depth(v, level + 1)
    return level


def loads(data: bytes | str, *, max_size: int) -> Any:
    """Parse untrusted JSON with a size cap, no duplicate keys and bounded depth."""
    if len(data) > max_size:
        raise ProtocolError("too_large", f"message exceeds {max_size} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("malformed", "message is not UTF-8") from exc
    # Cheap pre-check against pathological nesting before the recursive parser runs.
    if data.count("[") + data.count("{") > 4096:
        raise ProtocolError("malformed", "JSON has too many containers")
    try:
        obj = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("malformed", "message is not valid JSON") from exc
    if data.count("[") + data.count("{") > MAX_JSON_DEPTH:
        _depth(obj)  # only documents with that many containers can be too deep
    return obj


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
