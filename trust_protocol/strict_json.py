"""The one reader of untrusted JSON, for the service and the agent alike (stdlib only).

Every JSON body that arrives from the other side, a protocol message, an agent's
request, a login page's request, an admin API call, a SCIM request or a request to
the agent's local channel, is read by :func:`loads`. It is bounded and strict, so
that two parsers can never read one message two ways and no body can make the
reader fail in an unplanned way:

* a size cap counted in bytes, checked before anything else (``too_large``);
* UTF-8 only, without a byte-order mark;
* exactly one JSON value, with only JSON whitespace around it;
* no duplicate member names, at any depth;
* no ``NaN``/``Infinity``, and no fraction or exponent that overflows an IEEE-754
  double (integers are exact, up to Python's 4300-digit limit);
* no string (value or member name) holding a lone surrogate;
* a nesting limit, checked on the text *before* parsing, without recursion, so a
  body nested 50,000 levels deep is refused as cheaply as a flat one.

Every refusal is a :class:`JsonRefused`, a :class:`~trust_protocol.errors.ProtocolError`
with the code ``malformed`` or ``too_large`` and a finer ``reason``; nothing else
escapes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from trust_protocol.errors import ProtocolError

DEFAULT_MAX_DEPTH = 32

# A complete JSON string literal (the unrolled form: linear, no backtracking blow-up).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LEAF = re.compile(r"\[\]|\{\}")
# A \uD800-\uDFFF escape: the only way a lone surrogate gets past strict UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRefused("duplicate_key", f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise JsonRefused("non_finite", f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise JsonRefused("non_finite", f"number {text[:32]} is out of range")
    return value


def nesting_depth(text: str, limit: int) -> int:
    """How deeply ``text`` nests containers, counting at most ``limit + 1`` levels.

    Strings are removed first (brackets inside them do not count), then each pass
    removes every innermost ``[]``/``{}`` pair. Valid JSON of depth *d* empties in
    exactly *d* passes; anything left after ``limit`` passes is deeper than
    ``limit`` (or unbalanced, which the parser would refuse anyway). Before each
    pass, a run of openers longer than the levels still allowed ends the count.
    The work is linear in the text per pass, done by the regular-expression
    engine, with no recursion at all.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for depth in range(limit + 1):
        if not brackets:
            return depth
        # A run of openers as long as the levels still allowed settles it at once.
        if re.search(rf"[\[{{]{{{limit + 1 - depth}}}", brackets):
            return limit + 1
        brackets, removed = _LEAF.subn("", brackets)
        if not removed:  # unbalanced: refused like a document nested too deeply
            return limit + 1
    return limit + 1


class JsonRefused(ProtocolError):
    """A refusal of :func:`loads`: ``code`` as in the protocol, ``reason`` in detail.

    ``reason`` is one of ``too_large``, ``not_utf8``, ``bom``, ``syntax``,
    ``duplicate_key``, ``non_finite``, ``lone_surrogate`` and ``too_deep``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__("too_large" if reason == "too_large" else "malformed", detail)
        self.reason = reason


def _check_strings(obj: Any) -> None:
    """Refuse lone surrogates in any string (iterative: depth is already bounded)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonRefused("lone_surrogate", "string is not valid Unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads(
    data: bytes | bytearray | memoryview | str, *, max_size: int, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Parse untrusted JSON strictly: see the module docstring for the rules.

    ``max_size`` counts UTF-8 bytes; ``max_depth`` counts nested containers
    (``[[]]`` is 2). Raises :class:`ProtocolError` (``too_large`` or
    ``malformed``) and nothing else.
    """
    if isinstance(data, str):
        if len(data) > max_size:  # cheap bound first: a str has at least one byte per char
            raise JsonRefused("too_large", f"message exceeds {max_size} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("lone_surrogate", "message is not valid Unicode") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise JsonRefused("syntax", "message must be bytes or text")
    if len(raw) > max_size:
        raise JsonRefused("too_large", f"message exceeds {max_size} bytes")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise JsonRefused("bom", "message starts with a byte-order mark")
    try:
        text = raw.decode("utf-8")  # strict: no overlong forms, no encoded surrogates
    except UnicodeDecodeError:
        raise JsonRefused("not_utf8", "message is not UTF-8") from None
    # Fast path: a document with few brackets cannot nest deeply.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text, max_depth) > max_depth:
        raise JsonRefused("too_deep", f"JSON nested more than {max_depth} levels deep")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except JsonRefused:
        raise
    except (ValueError, RecursionError):  # RecursionError: unreachable, kept as a backstop
        raise JsonRefused("syntax", "message is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(obj)
    return obj


def loads_object(
    data: bytes | bytearray | memoryview | str, *, max_size: int, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    """:func:`loads`, and the value must be a JSON object (else ``malformed``)."""
    obj = loads(data, max_size=max_size, max_depth=max_depth)
    if not isinstance(obj, dict):
        raise JsonRefused("syntax", "the body must be a JSON object")
    return obj


def printable_id(value: object, *, max_length: int = 64) -> str:
    """An identifier from the other side (a device id): 1 to ``max_length`` characters.

    Every character must be printable (Python's :meth:`str.isprintable`: no
    control, format, separator other than the space, surrogate, private-use or
    unassigned code point), and the id may not be only spaces. Else ``malformed``.
    """
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= max_length
        or not value.isprintable()
        or not value.strip()
    ):
        raise ProtocolError("malformed", f"an id is 1 to {max_length} printable characters")
    return value


__all__ = [
    "DEFAULT_MAX_DEPTH",
    "JsonRefused",
    "loads",
    "loads_object",
    "nesting_depth",
    "printable_id",
]
