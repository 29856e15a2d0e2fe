"""Properties of report v2's delta merge and of its parser, on generated documents.

Applying a delta to the acknowledged document yields exactly the agent's full document, or
a refusal; never a third document. The merge never modifies what it merges into. Sealed
reports open to the body that was sealed, and hostile bytes are refused with a code.
"""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol import report_v2
from trust_protocol.errors import ProtocolError

NAMES = st.sampled_from(["os", "packages", "firewall", "disk", "edr", "screen", "users", "x"])
LEAF = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
LEAF = LEAF | st.floats(allow_nan=False, allow_infinity=False)
VALUE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
DOCS = st.dictionaries(NAMES, VALUE, max_size=8)
SERVER = PrivateKey(b"\x01" * 32)
DEVICE = SigningKey(b"\x02" * 32)


def _report(acked, new, **kw):
    return report_v2.make_report(
        device_id="dev",
        counter=1,
        clock=1.0,
        agent_version="t",
        platform={},
        document=new,
        acked=acked,
        acked_digest=report_v2.document_digest(acked),
        **kw,
    )


@settings(max_examples=80, deadline=None)
@given(DOCS, DOCS)
def test_the_agents_delta_merges_into_the_agents_document(acked, new):
    body = _report(acked, new)
    before = copy.deepcopy(acked)
    if body.kind == "unchanged":
        assert report_v2.document_digest(acked) == report_v2.document_digest(new)
        return
    merged = report_v2.apply_delta(acked, report_v2.document_digest(acked), body)
    assert merged == new
    assert acked == before


@settings(max_examples=60, deadline=None)
@given(
    DOCS,
    DOCS,
    st.dictionaries(NAMES, VALUE, max_size=3),
    st.lists(NAMES, max_size=3, unique=True),
    st.booleans(),
    st.booleans(),
)
def test_any_delta_gives_the_claimed_document_or_a_refusal(
    acked, claimed, changes, removed, honest_digests, held_right
):
    """A delta built by anyone: the merge yields a document whose digest is the claimed one
    (the agent's), or ``report_resync``/``malformed``; the acknowledged document is untouched."""
    removed = [n for n in removed if n not in changes]
    held = report_v2.document_digest(acked)
    body = report_v2.ReportBody(
        device_id="dev",
        counter=1,
        clock=1.0,
        agent_version="t",
        platform={},
        digest=report_v2.document_digest(claimed),
        base=held if held_right else report_v2.document_digest({"other": 1}),
        changes={
            name: {
                "digest": report_v2.section_digest(name, value if honest_digests else [value]),
                "value": value,
            }
            for name, value in changes.items()
        },
        removed=removed,
    )
    before = copy.deepcopy(acked)
    try:
        merged = report_v2.apply_delta(acked, held, body)
    except ProtocolError as exc:
        assert exc.code in ("report_resync", "malformed")
    else:
        assert report_v2.document_digest(merged) == body.digest
        assert merged == claimed  # digests collide only for equal documents
    assert acked == before


@settings(max_examples=60, deadline=None)
@given(DOCS, DOCS, st.booleans())
def test_sealed_reports_open_to_their_body(acked, new, full):
    body = _report(acked, new, full=full)
    sealed = report_v2.seal_report(body, DEVICE, bytes(SERVER.public_key))
    opened = report_v2.open_report(sealed, report_box_secret=bytes(SERVER))
    report_v2.verify_report(opened, bytes(DEVICE.verify_key))
    assert opened.body.to_json() == body.to_json()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_bytes_are_refused_with_a_code(data):
    try:
        report_v2.open_report(data, report_box_secret=bytes(SERVER))
    except ProtocolError as exc:
        assert exc.code in ("malformed", "too_large", "unsupported_version", "box_open_failed")
    else:  # pragma: no cover - random bytes never open a box
        raise AssertionError("opened")


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(report_v2.BODY_FIELDS)), VALUE, max_size=12))
def test_hostile_bodies_inside_a_good_box_are_refused_with_a_code(fields):
    """A correctly boxed body of any shape: parsed, or refused as malformed."""
    from nacl.public import Box

    from trust_protocol import encoding
    from trust_protocol.encoding import b64e

    body_bytes = encoding.dumps({**fields, "v": 2})
    eph = PrivateKey(b"\x03" * 32)
    sealed = Box(eph, SERVER.public_key).encrypt(b"\x00" * 64 + body_bytes, b"\x00" * 24)
    envelope = encoding.dumps({"v": 2, "epk": b64e(bytes(eph.public_key)), "box": b64e(sealed)})
    try:
        opened = report_v2.open_report(envelope, report_box_secret=bytes(SERVER))
    except ProtocolError as exc:
        assert exc.code == "malformed"
    else:
        assert opened.body.kind in report_v2.KINDS
