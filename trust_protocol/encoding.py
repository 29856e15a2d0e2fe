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
import math
import re
from typing import Any

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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError("malformed", f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise ProtocolError("malformed", f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise ProtocolError("malformed", f"number {text[:32]} is out of range")
    return value


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate written as a \uXXXX escape
        raise ProtocolError("malformed", "string is not valid Unicode") from exc


def _walk(obj: Any, depth: int = 0) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH containers, and lone surrogates."""
    if isinstance(obj, dict):
        if depth >= MAX_JSON_DEPTH:
            raise ProtocolError("malformed", "JSON nested too deeply")
        for key, value in obj.items():
            _check_text(key)
            _walk(value, depth + 1)
    elif isinstance(obj, list):
        if depth >= MAX_JSON_DEPTH:
            raise ProtocolError("malformed", "JSON nested too deeply")
        for value in obj:
            _walk(value, depth + 1)
    elif isinstance(obj, str):
        _check_text(obj)


def loads(data: bytes | str, *, max_size: int) -> Any:
    """Parse untrusted JSON with a size cap, no duplicate keys and bounded depth.

    ``max_size`` counts UTF-8 bytes. Refused as ``malformed``: invalid UTF-8 or
    JSON, duplicate object keys, ``NaN``/``Infinity`` and numbers that overflow a
    double, strings holding lone surrogates, and more than ``MAX_JSON_DEPTH``
    nested containers. Oversized input is ``too_large``.
    """
    if isinstance(data, str):
        if len(data) > max_size:  # cheap bound first: a str has at least one byte per char
            raise ProtocolError("too_large", f"message exceeds {max_size} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError("malformed", "message is not valid Unicode") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise ProtocolError("malformed", "message must be bytes or text")
    if len(raw) > max_size:
        raise ProtocolError("too_large", f"message exceeds {max_size} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed", "message is not UTF-8") from exc
    try:
        # The C parser bounds its own recursion (RecursionError), so pathological
        # nesting fails fast; the exact depth limit is applied on the result.
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("malformed", "message is not valid JSON") from exc
    if "\\u" in text or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _walk(obj)  # only such documents can be too deep or hold a lone surrogate
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
