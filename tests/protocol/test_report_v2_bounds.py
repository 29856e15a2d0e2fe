"""Report v2's limits on both sides, and each reason a report or an ack is refused (§16).

Written for the mutation run over ``trust_protocol/report_v2.py``: the vectors fix the
bytes of a few reports and the properties throw junk at the parser, and this file tries
each field limit at the value allowed and one beyond, and each check with a report that
passes all the others, so that a ``<=`` turned into ``<`` or a dropped check fails here.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol import report_v2 as r
from trust_protocol.encoding import b64d, b64e, dumps
from trust_protocol.errors import ProtocolError

SERVER_BOX = PrivateKey(b"\x21" * 32)
SERVER_SIGN = SigningKey(b"\x22" * 32)
OTHER_SIGN = SigningKey(b"\x23" * 32)
DEVICE = SigningKey(b"\x24" * 32)
NOW = 1_767_225_600
HEX = "ab" * 32
DOC = {"os": {"name": "linux"}, "disk": {"encrypted": True}}


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError) as err:
        fn(*args, **kwargs)
    return err.value.code


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 2,
        "device_id": "laptop",
        "counter": 5,
        "clock": NOW,
        "agent_version": "1.0",
        "platform": {"os": "linux"},
        "digest": HEX,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def _parse_code(**changes: Any) -> str:
    return _code(r.parse_body, _body(**changes))


def _envelope(body: dict[str, Any] | bytes, *, key: SigningKey = DEVICE) -> bytes:
    raw = body if isinstance(body, bytes) else dumps(body)
    signature = key.sign(r.REPORT_CONTEXT + raw).signature
    from nacl.public import Box

    eph = PrivateKey(b"\x25" * 32)
    sealed = Box(eph, SERVER_BOX.public_key).encrypt(signature + raw, b"\x00" * 24)
    return dumps({"v": 2, "epk": b64e(bytes(eph.public_key)), "box": b64e(bytes(sealed))})


def _open(envelope: bytes) -> r.OpenedReport:
    return r.open_report(envelope, report_box_secret=bytes(SERVER_BOX))


# ---- digests -------------------------------------------------------------------------------


def test_digests_computed_a_second_way():
    value = {"name": "linux"}
    expect = hashlib.sha256(b"devicetrust/v2/section\x00os\x00" + dumps(value)).hexdigest()
    assert r.section_digest("os", value) == expect
    digests = {"os": expect, "disk": "00" * 32}
    h = hashlib.sha256(b"devicetrust/v2/document\x00")
    h.update(b"disk\x00" + bytes(32))
    h.update(b"os\x00" + bytes.fromhex(expect))
    assert r.digest_of_sections(digests) == h.hexdigest()
    assert r.document_digest({"os": value, "disk": 1}) == r.digest_of_sections(
        {"os": expect, "disk": r.section_digest("disk", 1)}
    )


def test_split_volatile():
    facts = {**DOC, "collected_at": 1, "uptime_seconds": 2}
    assert r.split_volatile(facts) == (DOC, {"collected_at": 1, "uptime_seconds": 2})
    assert r.split_volatile(DOC) == (DOC, {})


# ---- parse_body ------------------------------------------------------------------------------


def test_a_minimal_body_parses_as_unchanged():
    body = r.parse_body(_body())
    assert (body.kind, body.device_id, body.counter, body.digest) == ("unchanged", "laptop", 5, HEX)
    assert (body.document, body.base, body.changes, body.removed, body.volatile) == (
        None,
        None,
        None,
        None,
        {},
    )


def test_unknown_fields_are_refused():
    assert _parse_code(extra=1) == "malformed"


def test_device_id_of_one_and_64_characters():
    assert r.parse_body(_body(device_id="a")).device_id == "a"
    assert r.parse_body(_body(device_id="a" * 64)).device_id == "a" * 64
    assert _parse_code(device_id="a" * 65) == "malformed"
    assert _parse_code(device_id="") == "malformed"
    assert _parse_code(device_id="a\x00") == "malformed"


def test_counter_from_1_to_2_53_minus_1():
    assert r.parse_body(_body(counter=1)).counter == 1
    assert r.parse_body(_body(counter=r.MAX_COUNTER)).counter == r.MAX_COUNTER
    assert _parse_code(counter=0) == "malformed"
    assert _parse_code(counter=r.MAX_COUNTER + 1) == "malformed"
    assert _parse_code(counter=True) == "malformed"


def test_clock_is_a_finite_number_kept_as_sent():
    assert r.parse_body(_body(clock=1.5)).clock == 1.5
    assert r.parse_body(_body(clock=NOW)).clock == NOW
    assert _parse_code(clock=10**400) == "malformed"
    assert _parse_code(clock=float("inf")) == "malformed"
    assert _parse_code(clock="1") == "malformed"


def test_agent_version_up_to_256_characters():
    assert r.parse_body(_body(agent_version="v" * 256)).agent_version == "v" * 256
    assert _parse_code(agent_version="v" * 257) == "malformed"


def test_platform_is_at_most_32_short_strings():
    big = {f"k{i}": "v" for i in range(32)}
    assert r.parse_body(_body(platform=big)).platform == big
    assert _parse_code(platform={**big, "k32": "v"}) == "malformed"
    assert r.parse_body(_body(platform={"k" * 256: "v" * 256})).platform
    assert _parse_code(platform={"k" * 257: "v"}) == "malformed"
    assert _parse_code(platform={"k": "v" * 257}) == "malformed"
    assert _parse_code(platform={"k": 1}) == "malformed"
    assert _parse_code(platform=["k"]) == "malformed"


@pytest.mark.parametrize(
    "bad",
    ["AB" * 32, "ab" * 31 + "a", "ab" * 32 + "a", "g" * 64, "X" * 64, "ab" * 31 + " a", None, 5],
)
def test_digest_is_64_lower_case_hex_digits(bad):
    assert _parse_code(digest=bad) == "malformed"


def test_volatile_holds_only_its_two_fields():
    volatile = {"collected_at": 1, "uptime_seconds": 2}
    assert r.parse_body(_body(volatile=volatile)).volatile == volatile
    assert _parse_code(volatile={"os": 1}) == "malformed"
    assert _parse_code(volatile=[]) == "malformed"


def test_a_full_report_has_at_most_256_named_sections():
    doc = {f"s{i}": i for i in range(256)}
    assert r.parse_body(_body(document=doc)).document == doc
    assert r.parse_body(_body(document=doc)).kind == "full"
    assert _parse_code(document={**doc, "s256": 0}) == "malformed"
    assert r.parse_body(_body(document={"a" * 64: 1})).document == {"a" * 64: 1}
    for name in ("a" * 65, "", "collected_at", "uptime_seconds", "a\x01"):
        assert _parse_code(document={name: 1}) == "malformed", name
    assert _parse_code(document=[]) == "malformed"


def test_full_or_delta_not_both():
    for key, value in (("base", HEX), ("changes", {}), ("removed", [])):
        assert _parse_code(document=DOC, **{key: value}) == "malformed"


def _delta(**changes: Any) -> dict[str, Any]:
    return {"base": HEX, "changes": {}, "removed": [], **changes}


def test_a_delta_parses():
    change = {"digest": HEX, "value": 1}
    body = r.parse_body(_body(**_delta(changes={"os": change}, removed=["disk"])))
    assert (body.kind, body.base, body.changes, body.removed) == (
        "delta",
        HEX,
        {"os": change},
        ["disk"],
    )


def test_a_delta_needs_all_three_fields_and_a_hex_base():
    for key in ("base", "changes", "removed"):
        assert _parse_code(**_delta(**{key: _DROP})) == "malformed", key
    assert _parse_code(**_delta(base="AB" * 32)) == "malformed"
    assert _parse_code(**_delta(changes=[])) == "malformed"
    assert _parse_code(**_delta(removed={})) == "malformed"


def test_a_delta_touches_at_most_256_sections():
    change = {"digest": HEX, "value": 1}
    changes = {f"c{i}": change for i in range(128)}
    removed = [f"r{i}" for i in range(128)]
    assert r.parse_body(_body(**_delta(changes=changes, removed=removed))).removed == removed
    assert _parse_code(**_delta(changes=changes, removed=[*removed, "r128"])) == "malformed"
    assert _parse_code(**_delta(changes={**changes, "c128": change}, removed=removed)) == (
        "malformed"
    )


def test_each_change_and_removal_is_checked():
    good = {"digest": HEX, "value": 1}
    assert _parse_code(**_delta(changes={"collected_at": good})) == "malformed"
    assert _parse_code(**_delta(changes={"os": {"digest": HEX}})) == "malformed"
    assert _parse_code(**_delta(changes={"os": {**good, "x": 1}})) == "malformed"
    assert _parse_code(**_delta(changes={"os": [HEX, 1]})) == "malformed"
    assert _parse_code(**_delta(changes={"os": {**good, "digest": "AB" * 32}})) == "malformed"
    assert _parse_code(**_delta(removed=["uptime_seconds"])) == "malformed"
    assert _parse_code(**_delta(removed=[5])) == "malformed"
    assert _parse_code(**_delta(changes={"os": good}, removed=["os"])) == "malformed"
    assert _parse_code(**_delta(removed=["os", "os"])) == "malformed"


# ---- open_report, verify_report, check_clock ------------------------------------------------


def test_a_sealed_report_opens_and_verifies():
    body = r.make_report(
        device_id="laptop",
        counter=1,
        clock=NOW,
        agent_version="1",
        platform={},
        document=DOC,
    )
    opened = _open(r.seal_report(body, DEVICE, bytes(SERVER_BOX.public_key)))
    assert opened.body == body
    assert opened.body_bytes == dumps(body.to_json())
    r.verify_report(opened, bytes(DEVICE.verify_key))
    assert _code(r.verify_report, opened, bytes(OTHER_SIGN.verify_key)) == "device_key_mismatch"
    assert _code(r.verify_report, opened, b"\x00" * 31) == "device_key_mismatch"


def test_the_report_signature_covers_its_context():
    raw = dumps(_body())
    plain = DEVICE.sign(raw).signature
    opened = replace(_open(_envelope(_body())), signature=plain)
    assert _code(r.verify_report, opened, bytes(DEVICE.verify_key)) == "device_key_mismatch"


def test_envelope_checks():
    good = _envelope(_body())
    assert _open(good).body.device_id == "laptop"
    env = __import__("json").loads(good)
    assert _code(_open, dumps({**env, "x": 1})) == "malformed"
    assert _code(_open, dumps([env])) == "malformed"
    assert _code(_open, dumps({**env, "v": 1})) == "unsupported_version"
    assert _code(_open, dumps({**env, "epk": b64e(b"\x00" * 31)})) == "malformed"
    box = b64d(env["box"])
    shortest = 24 + 16 + 64
    assert _code(_open, dumps({**env, "box": b64e(box[: shortest - 1])})) == "malformed"
    assert _code(_open, dumps({**env, "box": b64e(b"\x00" * shortest)})) == "box_open_failed"
    assert _code(_open, dumps({**env, "epk": b64e(b"\x01" * 32)})) == "box_open_failed"
    assert _code(_open, _envelope([1])) == "malformed"  # type: ignore[arg-type]
    assert _code(_open, _envelope({**_body(), "v": 1})) == "unsupported_version"
    assert _code(_open, _envelope({**_body(), "counter": 0})) == "malformed"


def test_envelope_size_cap():
    good = _envelope(_body())
    assert r.open_report(good, report_box_secret=bytes(SERVER_BOX), max_size=len(good))
    with pytest.raises(ProtocolError) as err:
        r.open_report(good, report_box_secret=bytes(SERVER_BOX), max_size=len(good) - 1)
    assert err.value.code == "too_large"


def test_clock_skew_is_inclusive():
    body = r.parse_body(_body(clock=NOW))
    assert r.check_clock(body, now=NOW - 300, max_skew=300) == 300
    assert r.check_clock(body, now=NOW + 300, max_skew=300) == -300
    assert _code(r.check_clock, body, now=NOW - 301, max_skew=300) == "clock_skew"
    assert _code(r.check_clock, body, now=NOW + 301, max_skew=300) == "clock_skew"


# ---- full documents and deltas ---------------------------------------------------------------


def test_full_document_checks_its_digest():
    body = r.parse_body(_body(document=DOC, digest=r.document_digest(DOC)))
    assert r.full_document(body) == DOC
    lying = r.parse_body(_body(document=DOC, digest=HEX))
    assert _code(r.full_document, lying) == "malformed"


def _delta_body(acked: dict, new: dict) -> r.ReportBody:
    return r.make_report(
        device_id="laptop",
        counter=2,
        clock=NOW,
        agent_version="1",
        platform={},
        document=new,
        acked=acked,
        acked_digest=r.document_digest(acked),
    )


def test_make_report_chooses_the_smallest_kind():
    new = {"os": {"name": "linux"}, "edr": True}
    delta = _delta_body(DOC, new)
    assert delta.kind == "delta"
    assert delta.changes == {"edr": {"digest": r.section_digest("edr", True), "value": True}}
    assert delta.removed == ["disk"]
    assert delta.digest == r.document_digest(new)
    assert _delta_body(DOC, DOC).kind == "unchanged"
    kw: dict[str, Any] = dict(device_id="d", counter=1, clock=NOW, agent_version="1", platform={})
    assert r.make_report(**kw, document=DOC).kind == "full"
    assert r.make_report(**kw, document=DOC, acked=DOC).kind == "full"
    assert r.make_report(**kw, document=DOC, acked_digest=HEX).kind == "full"
    full = r.make_report(
        **kw, document=DOC, acked=DOC, acked_digest=r.document_digest(DOC), full=True
    )
    assert full.kind == "full" and full.document == DOC
    with_volatile = r.make_report(**kw, document=DOC, volatile={"uptime_seconds": 3})
    assert with_volatile.to_json()["volatile"] == {"uptime_seconds": 3}
    assert "volatile" not in r.make_report(**kw, document=DOC).to_json()


def test_an_empty_delta_serialises_its_empty_fields():
    body = r.ReportBody("d", 1, NOW, "1", {}, HEX, base=HEX)
    assert body.to_json()["changes"] == {} and body.to_json()["removed"] == []
    assert body.kind == "delta"


def test_apply_delta_merges_or_asks_for_the_whole_document():
    new = {"os": {"name": "linux"}, "edr": True}
    acked = dict(DOC)
    delta = _delta_body(DOC, new)
    assert r.apply_delta(acked, r.document_digest(DOC), delta) == new
    assert acked == DOC  # never modified
    assert _code(r.apply_delta, DOC, None, delta) == "report_resync"
    assert _code(r.apply_delta, DOC, HEX, delta) == "report_resync"
    bad_change = replace(delta, changes={"edr": {"digest": HEX, "value": True}})
    assert _code(r.apply_delta, DOC, r.document_digest(DOC), bad_change) == "malformed"
    wrong_claim = replace(delta, digest=HEX)
    assert _code(r.apply_delta, DOC, r.document_digest(DOC), wrong_claim) == "report_resync"


def test_a_merged_document_of_more_than_256_sections_is_refused():
    acked = {f"s{i}": i for i in range(256)}
    grown = {**acked, "s256": 256}
    delta = _delta_body(acked, grown)
    assert _code(r.apply_delta, acked, r.document_digest(acked), delta) == "report_resync"
    at_limit = {**{f"s{i}": i for i in range(255)}, "t": 1}
    assert r.apply_delta(acked, r.document_digest(acked), _delta_body(acked, at_limit)) == at_limit


# ---- the acknowledgement and the advertised key ---------------------------------------------


ACK = r.Ack("laptop", 5, HEX, 900, {"q": "select 1"}, NOW)


def test_an_ack_round_trips_with_and_without_a_challenge():
    answer = r.sign_ack(ACK, SERVER_SIGN)
    assert answer["status"] == "accepted"
    assert r.open_ack(answer, SERVER_SIGN.verify_key) == ACK
    reset = replace(ACK, digest=None, challenge="Y2lk")
    assert r.open_ack(r.sign_ack(reset, SERVER_SIGN), SERVER_SIGN.verify_key) == reset
    assert "challenge" not in ACK.to_json()


def _signed(payload: dict[str, Any], key: SigningKey = SERVER_SIGN) -> dict[str, str]:
    raw = dumps(payload)
    return {"ack": b64e(raw), "signature": b64e(key.sign(r.ACK_CONTEXT + raw).signature)}


def test_ack_refusals():
    good = ACK.to_json()
    key = SERVER_SIGN.verify_key
    assert _code(r.open_ack, [good], key) == "malformed"
    assert _code(r.open_ack, _signed(good, OTHER_SIGN), key) == "bad_ack_signature"
    plain = {"ack": b64e(dumps(good)), "signature": b64e(SERVER_SIGN.sign(dumps(good)).signature)}
    assert _code(r.open_ack, plain, key) == "bad_ack_signature"
    assert _code(r.open_ack, {**_signed(good), "signature": b64e(b"\x00" * 63)}, key) == "malformed"
    assert _code(r.open_ack, _signed({**good, "v": 1}), key) == "malformed"
    assert _code(r.open_ack, _signed([good]), key) == "malformed"  # type: ignore[arg-type]
    assert _code(r.open_ack, _signed({**good, "digest": "AB" * 32}), key) == "malformed"
    assert _code(r.open_ack, _signed({**good, "osquery_queries": {"q": 1}}), key) == "malformed"
    assert _code(r.open_ack, _signed({**good, "challenge": 5}), key) == "malformed"
    for field in ("device_id", "counter", "next_report_in", "time", "osquery_queries"):
        missing = {k: v for k, v in good.items() if k != field}
        assert _code(r.open_ack, _signed(missing), key) == "malformed", field


def test_ack_size_cap():
    big = {**ACK.to_json(), "osquery_queries": {"q": "x" * r.MAX_ACK}}
    assert _code(r.open_ack, _signed(big), SERVER_SIGN.verify_key) == "too_large"


def test_the_report_key_advert():
    public = bytes(SERVER_BOX.public_key)
    advert = r.sign_report_key(public, SERVER_SIGN)
    assert advert["v"] == 2
    assert r.open_report_key(advert, SERVER_SIGN.verify_key) == public
    assert _code(r.open_report_key, advert, OTHER_SIGN.verify_key) == "bad_ack_signature"
    assert _code(r.open_report_key, {**advert, "v": 1}, SERVER_SIGN.verify_key) == (
        "unsupported_version"
    )
    assert _code(r.open_report_key, [advert], SERVER_SIGN.verify_key) == "unsupported_version"
    plain = {**advert, "signature": b64e(SERVER_SIGN.sign(public).signature)}
    assert _code(r.open_report_key, plain, SERVER_SIGN.verify_key) == "bad_ack_signature"
    short = {**advert, "box_key": b64e(public[:31])}
    assert _code(r.open_report_key, short, SERVER_SIGN.verify_key) == "malformed"


def test_apply_delta_and_full_document_refuse_a_body_of_another_kind():
    # Callers check the kind first; the functions still refuse rather than misread.
    unchanged = r.parse_body(_body())
    assert _code(r.apply_delta, DOC, HEX, unchanged) == "malformed"
    for fields in (
        {"base": HEX, "changes": None, "removed": []},
        {"base": HEX, "changes": {}, "removed": None},
        {"base": None, "changes": {}, "removed": []},
    ):
        odd = replace(unchanged, **fields)
        assert _code(r.apply_delta, DOC, HEX, odd) == "malformed", fields
    assert _code(r.full_document, unchanged) == "malformed"


def test_a_report_key_signature_of_the_wrong_length_is_malformed():
    advert = r.sign_report_key(bytes(SERVER_BOX.public_key), SERVER_SIGN)
    for size in (63, 65):
        short = {**advert, "signature": b64e(b"\x01" * size)}
        assert _code(r.open_report_key, short, SERVER_SIGN.verify_key) == "malformed"
