"""Property tests where untrusted admin-API input meets a parser: cursors and body schemas."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idp_service.api import OPERATIONS
from idp_service.api import schema as S
from idp_service.api.core import decode_cursor, encode_cursor
from idp_service.platform.errors import ServiceError
from idp_service.web.errors import status_of

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
KINDS = [(str,), (int,), (str, str)]


@given(st.text(max_size=200), st.sampled_from(KINDS))
def test_any_cursor_text_decodes_or_is_refused_with_bad_cursor(text, kinds):
    try:
        values = decode_cursor(text, kinds)
    except ServiceError as exc:
        assert (exc.code, status_of(exc)) == ("bad_cursor", 400)
    else:
        assert [type(v) for v in values] == list(kinds)


@given(st.lists(json_values, max_size=3), st.sampled_from(KINDS))
def test_encoded_json_cursors_never_leak_wrong_types(values, kinds):
    try:
        decoded = decode_cursor(encode_cursor(values), kinds)
    except ServiceError as exc:
        assert exc.code == "bad_cursor"
    else:
        assert decoded == values
        for value in decoded:
            assert not isinstance(value, str) or S.storable(value)


BODY_SCHEMAS = [op.body for op in OPERATIONS if op.body is not None]


@pytest.mark.parametrize("schema", BODY_SCHEMAS, ids=lambda s: ",".join(s.get("properties", {})))
@settings(max_examples=60)
@given(value=json_values)
def test_validator_accepts_only_storable_values_of_the_declared_shape(schema, value):
    try:
        S.validate(schema, value)
    except S.SchemaError as exc:
        assert exc.path.startswith("$")
        return
    assert isinstance(value, dict)
    assert set(value) <= set(schema["properties"])
    assert set(schema.get("required", ())) <= set(value)
    # Everything accepted can be stored: no NUL, no lone surrogate, in keys or values.
    assert all(S.storable(t) for t in _strings(value))


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@given(st.text())
def test_storable_rejects_nul_and_lone_surrogates(text):
    assert S.storable(text) == (
        "\x00" not in text and not any(0xD800 <= ord(c) < 0xE000 for c in text)
    )
