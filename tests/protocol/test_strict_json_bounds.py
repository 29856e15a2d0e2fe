"""strict_json paths the other tests left untried (found by a mutation run, 2026-12-06).

The run over ``trust_protocol/strict_json.py`` showed that no test gave :func:`loads` text
(not bytes) over the cap or holding a lone surrogate, or a value that is neither, that
:func:`loads_object` was never given its own depth limit, that nothing tried a document
with exactly ``max_depth`` openers (the fast path's edge) or exactly ``max_depth`` deep
with more openers than that, and that :func:`nesting_depth`'s results were never checked
directly: a depth limit that answered ``limit - 1`` would have let any depth through.
"""

from __future__ import annotations

import pytest

from trust_protocol.strict_json import (
    DEFAULT_MAX_DEPTH,
    JsonRefused,
    loads,
    loads_object,
    nesting_depth,
)


def _refused(data, **kw) -> tuple[str, str]:
    with pytest.raises(JsonRefused) as info:
        loads(data, **{"max_size": 1 << 20, **kw})
    return info.value.code, info.value.reason


def test_text_is_capped_by_its_length_before_it_is_encoded():
    assert loads('"' + "a" * 8 + '"', max_size=10) == "a" * 8
    assert _refused('"' + "a" * 9 + '"', max_size=10) == ("too_large", "too_large")
    # Two bytes each in UTF-8: within the cap in characters, over it in bytes.
    assert _refused('"' + "\u00e9" * 5 + '"', max_size=10) == ("too_large", "too_large")


def test_text_with_a_lone_surrogate_character():
    assert _refused('"\ud800"') == ("malformed", "lone_surrogate")


@pytest.mark.parametrize("value", [5, None, ["[]"], 1.5])
def test_only_bytes_or_text(value):
    assert _refused(value) == ("malformed", "syntax")


def test_loads_object_wants_an_object_and_passes_its_depth_limit():
    assert loads_object(b'{"a": 1}', max_size=100) == {"a": 1}
    with pytest.raises(JsonRefused) as info:
        loads_object(b"[1]", max_size=100)
    assert (info.value.code, info.value.reason) == ("malformed", "syntax")
    with pytest.raises(JsonRefused) as info:
        loads_object(b'{"a": [[1]]}', max_size=100, max_depth=2)
    assert info.value.reason == "too_deep"
    assert loads_object(b'{"a": [1]}', max_size=100, max_depth=2) == {"a": [1]}


def test_exactly_max_depth_openers_unbalanced_is_a_syntax_error():
    # At the fast path's edge the parser, not the depth count, refuses it.
    assert _refused(b"[" * DEFAULT_MAX_DEPTH) == ("malformed", "syntax")
    assert _refused(b"[" * (DEFAULT_MAX_DEPTH + 1)) == ("malformed", "too_deep")


def test_exactly_max_depth_deep_with_more_openers_is_accepted():
    deep = b"[" * DEFAULT_MAX_DEPTH + b"]" * (DEFAULT_MAX_DEPTH - 1) + b",[]]"
    assert deep.count(b"[") == DEFAULT_MAX_DEPTH + 1
    assert loads(deep, max_size=1000) is not None
    deeper = b"[" * (DEFAULT_MAX_DEPTH + 1) + b"]" * (DEFAULT_MAX_DEPTH + 1)
    assert _refused(deeper) == ("malformed", "too_deep")


@pytest.mark.parametrize(
    ("text", "limit", "depth"),
    [
        ("", 4, 0),
        ("1", 4, 0),
        ("[]", 4, 1),
        ('[{"a": "[[[["}, []]', 4, 2),  # brackets inside strings do not count
        ("[[[[]]]]", 4, 4),
        ("[[[[[]]]]]", 4, 5),  # one deeper than the limit: limit + 1
        ("[" * 40 + "]" * 40, 4, 5),  # a long run of openers settles it at once
        ("[[]", 4, 5),  # unbalanced: counted as too deep
        ("[]]", 4, 5),
        ("[{}[[]]]", 2, 3),
    ],
)
def test_nesting_depth_counts_up_to_limit_plus_one(text, limit, depth):
    assert nesting_depth(text, limit) == depth
