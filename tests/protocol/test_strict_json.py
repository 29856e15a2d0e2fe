"""The one reader of untrusted JSON (trust_protocol/strict_json.py), and device ids."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust_protocol.device_keys import DeviceKeys
from trust_protocol.errors import ProtocolError
from trust_protocol.response import ResponseBody, seal_response
from trust_protocol.strict_json import (
    DEFAULT_MAX_DEPTH,
    JsonRefused,
    loads,
    loads_object,
    nesting_depth,
    printable_id,
)


def reason_of(data, **kw) -> str:
    with pytest.raises(JsonRefused) as info:
        loads(data, **{"max_size": 1 << 20, **kw})
    assert info.value.code in ("malformed", "too_large")
    return info.value.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "too_deep"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "too_deep"),
        (b"[" * 50_000, "too_deep"),  # unbalanced: never reaches the parser
        (b"[" * 33 + b"]" * 33, "too_deep"),
        (b'{"a": 1, "a": 1}', "duplicate_key"),
        (b'[{"x": {"a": 1, "a": 2}}]', "duplicate_key"),
        (b"NaN", "non_finite"),
        (b"[Infinity]", "non_finite"),
        (b'{"x": -Infinity}', "non_finite"),
        (b"1e999", "non_finite"),
        (b'\xef\xbb\xbf{"a": 1}', "bom"),
        (b'"\\ud800"', "lone_surrogate"),
        (b'{"\\udfff": 1}', "lone_surrogate"),
        (b'["ok", ["\\udbff x"]]', "lone_surrogate"),
        (b"\xed\xa0\x80", "not_utf8"),  # a surrogate encoded in UTF-8
        (b"\xc0\xaf", "not_utf8"),  # overlong
        (b"\xff\xfe{\x00}\x00", "not_utf8"),  # UTF-16
        (b"{", "syntax"),
        (b"[1] x", "syntax"),
        (b"", "syntax"),
        (b"1" * 5000, "syntax"),  # over Python's integer digit limit
    ],
)
def test_refusals(data, reason):
    assert reason_of(data) == reason


def test_size_cap_comes_first():
    assert reason_of(b"[" * 100, max_size=99) == "too_large"
    assert reason_of("é" * 60, max_size=100) == "too_large"  # counted in UTF-8 bytes
    assert loads(b"[" * 16 + b"]" * 16, max_size=32) == [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]


def test_depth_limit_is_exact():
    ok = b"[" * DEFAULT_MAX_DEPTH + b"]" * DEFAULT_MAX_DEPTH
    assert nesting_depth(ok.decode(), DEFAULT_MAX_DEPTH) == DEFAULT_MAX_DEPTH
    loads(ok, max_size=len(ok))
    assert reason_of(b"[" + ok + b"]") == "too_deep"
    assert reason_of(b"[[[]]]", max_depth=2) == "too_deep"
    assert loads(b"[[]]", max_size=10, max_depth=2) == [[]]
    # Brackets inside strings do not count.
    assert loads(b'["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"{{{"]', max_size=100) == [
        '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["{{{'
    ]


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text('[]{}"\\ab'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("[]{}a", max_size=3), inner)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(1, 40))
def test_nesting_depth_is_the_true_depth(value, limit):
    text = json.dumps(value)
    assert nesting_depth(text, limit) == min(_depth(value), limit + 1)
    if _depth(value) <= limit:
        assert loads(text, max_size=len(text.encode()), max_depth=limit) == value
    else:
        assert reason_of(text, max_depth=limit) == "too_deep"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_read_or_refused_never_anything_else(data):
    try:
        loads(data, max_size=200)
    except ProtocolError as exc:
        assert exc.code == "malformed"


def test_loads_object():
    assert loads_object(b'{"a": 1}', max_size=10) == {"a": 1}
    for data in (b"[]", b"1", b"null", b'"x"'):
        with pytest.raises(ProtocolError):
            loads_object(data, max_size=10)


@pytest.mark.parametrize(
    "value", ["4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10", "laptop-0001", "é", "a b", "x" * 64]
)
def test_printable_ids(value):
    assert printable_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "\x00", "\x00\x00\x00", "a\x07b", "a\nb", " ", "   ", "\u200b", "\u2028", "\ud800",
     "x" * 65, 5, None, ["x"]],
)  # fmt: skip
def test_non_printable_ids_are_malformed(value):
    with pytest.raises(ProtocolError) as info:
        printable_id(value)
    assert info.value.code == "malformed"


def test_response_with_a_nul_device_id_is_malformed():
    """The protocol boundary: a registration or sign-in from a NUL-only device id."""
    from tests.protocol.test_protocol_unit import CHALLENGE, NOW, TOKEN, verify

    keys = DeviceKeys.generate("\x00\x00")
    body = ResponseBody(TOKEN, keys.public_json(), {}, "0.1.0", NOW, {})
    with pytest.raises(ProtocolError) as info:
        verify(seal_response(body, CHALLENGE, keys))
    assert info.value.code == "malformed"
