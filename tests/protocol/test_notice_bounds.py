"""Notices' limits on both sides, and each reason one is refused (§14 of the spec).

Written for the mutation run over ``trust_protocol/notice.py``: every field limit is
tried at the value allowed and one beyond, every size bound of the sealed envelope at
its edge, and each check of :func:`open_notice` with a notice that passes all the
others, so that a ``<=`` turned into ``<`` or a dropped check fails here.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol.challenge import key_id
from trust_protocol.encoding import dumps
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import (
    EPK_SIZE,
    MAC_SIZE,
    MAX_CODE,
    MAX_FIELD,
    MAX_ID,
    MAX_LIFETIME,
    MAX_PAYLOAD,
    MAX_SEALED,
    MAX_TIMESTAMP,
    NONCE_SIZE,
    NOTICE_CONTEXT,
    SIG_SIZE,
    Notice,
    open_notice,
    open_signed,
    seal_notice,
    seal_signed,
)

SERVER = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
BOX = PrivateKey(b"\x03" * 32)
NOW = 1_767_225_600

GOOD = Notice(
    kind="approval",
    kid=key_id(SERVER.verify_key),
    id="n-1",
    to="laptop",
    issued_at=NOW - 10,
    expires_at=NOW + 600,
    code="ABCD-2345",
    device={"hostname": "desk", "platform": "linux", "serial": None, "first_seen": NOW - 60},
)


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError) as err:
        fn(*args, **kwargs)
    return err.value.code


def _open(sealed: bytes, *, now: float = NOW, device_id: str = "laptop") -> Notice:
    return open_notice(sealed, BOX, SERVER.verify_key, device_id, now=now)


def _round_trips(notice: Notice) -> None:
    sealed = seal_notice(notice, SERVER, bytes(BOX.public_key))
    assert _open(sealed, now=notice.issued_at, device_id=notice.to) == notice


def _refused(notice: Notice) -> None:
    assert _code(seal_notice, notice, SERVER, bytes(BOX.public_key)) == "malformed"
    # The same fields signed without the sealing side's check are refused when opened.
    sealed = seal_signed(dumps(notice.to_json()), NOTICE_CONTEXT, SERVER, bytes(BOX.public_key))
    assert _code(_open, sealed, now=0) == "malformed"


def test_a_good_notice_round_trips():
    _round_trips(GOOD)


@pytest.mark.parametrize(("name", "limit"), [("id", MAX_ID), ("to", MAX_ID), ("code", MAX_CODE)])
def test_ids_and_code_of_one_and_of_their_limit(name, limit):
    _round_trips(replace(GOOD, **{name: "a"}))
    _round_trips(replace(GOOD, **{name: "a" * limit}))
    _refused(replace(GOOD, **{name: "a" * (limit + 1)}))
    _refused(replace(GOOD, **{name: ""}))
    _refused(replace(GOOD, **{name: "a\x00b"}))


def test_kid_limits():
    # A kid of the right key is 11 characters; other lengths are checked before the key.
    _refused(replace(GOOD, kid="a" * (MAX_ID + 1)))
    _refused(replace(GOOD, kid=""))
    long_kid = replace(GOOD, kid="a" * MAX_ID)
    assert seal_notice(long_kid, SERVER, bytes(BOX.public_key))


def test_only_the_approval_kind():
    _refused(replace(GOOD, kind="other"))


def test_timestamps_from_zero_to_2_53_minus_1():
    _round_trips(replace(GOOD, issued_at=0, expires_at=1, device={**GOOD.device, "first_seen": 0}))
    top = replace(GOOD, issued_at=MAX_TIMESTAMP - 1, expires_at=MAX_TIMESTAMP)
    _round_trips(replace(top, device={**GOOD.device, "first_seen": MAX_TIMESTAMP}))
    _refused(replace(GOOD, issued_at=MAX_TIMESTAMP, expires_at=MAX_TIMESTAMP + 1))
    _refused(replace(GOOD, issued_at=-1))
    _refused(replace(GOOD, issued_at=True))
    _refused(replace(GOOD, device={**GOOD.device, "first_seen": MAX_TIMESTAMP + 1}))
    _refused(replace(GOOD, device={**GOOD.device, "first_seen": -1}))
    _refused(replace(GOOD, device={**GOOD.device, "first_seen": None}))


def test_lifetime_is_more_than_zero_and_at_most_a_day():
    _round_trips(replace(GOOD, expires_at=GOOD.issued_at + 1))
    _round_trips(replace(GOOD, expires_at=GOOD.issued_at + MAX_LIFETIME))
    _refused(replace(GOOD, expires_at=GOOD.issued_at + MAX_LIFETIME + 1))
    _refused(replace(GOOD, expires_at=GOOD.issued_at))


@pytest.mark.parametrize("name", ["hostname", "platform", "serial"])
def test_device_strings_are_null_or_1_to_256_printable(name):
    _round_trips(replace(GOOD, device={**GOOD.device, name: None}))
    _round_trips(replace(GOOD, device={**GOOD.device, name: "h"}))
    _round_trips(replace(GOOD, device={**GOOD.device, name: "h" * MAX_FIELD}))
    _refused(replace(GOOD, device={**GOOD.device, name: "h" * (MAX_FIELD + 1)}))
    _refused(replace(GOOD, device={**GOOD.device, name: ""}))
    _refused(replace(GOOD, device={**GOOD.device, name: "a\nb"}))
    _refused(replace(GOOD, device={**GOOD.device, name: 5}))


def test_device_has_exactly_its_four_fields():
    _refused(replace(GOOD, device={**GOOD.device, "extra": None}))
    less = dict(GOOD.device)
    del less["serial"]
    _refused(replace(GOOD, device=less))


def test_the_payload_cap_when_sealing():
    # Non-ASCII host names make the payload long while every field stays within its limit.
    wide = "\U0001f600" * MAX_FIELD
    big = replace(GOOD, device={**GOOD.device, "hostname": wide, "platform": wide})
    assert len(dumps(big.to_json())) > MAX_PAYLOAD
    assert _code(seal_notice, big, SERVER, bytes(BOX.public_key)) == "too_large"


def test_sealed_size_bounds():
    smallest = EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + 2
    assert MAX_SEALED == EPK_SIZE + NONCE_SIZE + MAC_SIZE + SIG_SIZE + MAX_PAYLOAD
    # At each bound the junk gets as far as the box; one byte beyond, the size refuses it.
    assert _code(_open, b"\x00" * MAX_SEALED) == "box_open_failed"
    assert _code(_open, b"\x00" * (MAX_SEALED + 1)) == "too_large"
    assert _code(_open, b"\x00" * smallest) == "box_open_failed"
    assert _code(_open, b"\x00" * (smallest - 1)) == "malformed"
    assert _code(_open, "not bytes") == "malformed"
    assert _code(_open, bytearray(b"\x00" * smallest)) == "box_open_failed"


def test_open_signed_checks_the_callers_context_and_names_its_code():
    payload = b'{"a":1}'
    sealed = seal_signed(payload, b"ctx-a\x00", SERVER, bytes(BOX.public_key))
    assert (
        open_signed(
            sealed,
            BOX,
            SERVER.verify_key,
            context=b"ctx-a\x00",
            max_payload=64,
            what="x",
            bad_signature="bad_grant_signature",
        )
        == payload
    )
    for context, key in ((b"ctx-b\x00", SERVER), (b"ctx-a\x00", OTHER)):
        code = _code(
            open_signed,
            sealed,
            BOX,
            key.verify_key,
            context=context,
            max_payload=64,
            what="x",
            bad_signature="bad_grant_signature",
        )
        assert code == "bad_grant_signature"
    # max_payload is the caller's: a payload over it is too large before the box is opened.
    assert (
        _code(
            open_signed,
            sealed,
            BOX,
            SERVER.verify_key,
            context=b"ctx-a\x00",
            max_payload=len(payload) - 1,
            what="x",
            bad_signature="bad_grant_signature",
        )
        == "too_large"
    )


def _sealed_fields(obj: object, key: SigningKey = SERVER, raw: bytes | None = None) -> bytes:
    payload = dumps(obj) if raw is None else raw
    return seal_signed(payload, NOTICE_CONTEXT, key, bytes(BOX.public_key))


def test_open_notice_refusals_each_with_its_code():
    fields = GOOD.to_json()
    assert _open(_sealed_fields(fields)) == GOOD
    assert _code(_open, _sealed_fields(fields, key=OTHER)) == "bad_notice_signature"
    assert _code(_open, _sealed_fields([fields])) == "malformed"
    assert _code(_open, _sealed_fields({**fields, "v": 2})) == "unsupported_version"
    assert _code(_open, _sealed_fields({**fields, "x": 1})) == "malformed"
    assert _code(_open, _sealed_fields(None, raw=json.dumps(fields).encode())) == "malformed"
    assert _code(_open, _sealed_fields({**fields, "issued_at": "1"})) == "malformed"
    # Signed by the server but naming another signing key.
    other_kid = {**fields, "kid": key_id(OTHER.verify_key)}
    assert _code(_open, _sealed_fields(other_kid)) == "bad_notice_signature"
    assert _code(_open, _sealed_fields(fields), device_id="desktop") == "notice_wrong_device"


def test_expiry_is_exclusive():
    sealed = seal_notice(GOOD, SERVER, bytes(BOX.public_key))
    assert _open(sealed, now=GOOD.expires_at - 1) == GOOD
    assert _code(_open, sealed, now=GOOD.expires_at) == "notice_expired"


def _notice_of_payload_size(size: int) -> Notice:
    """A valid notice whose signed payload is exactly ``size`` bytes (wide characters)."""
    wide = "\U0001f600" * MAX_FIELD  # four bytes each in UTF-8
    for serial_len in range(MAX_FIELD + 1):
        device = {
            **GOOD.device,
            "platform": wide,
            "serial": wide[:serial_len] or None,
            "hostname": "h",
        }
        extra = size - len(dumps(replace(GOOD, device=device).to_json()))
        if 0 <= extra <= MAX_FIELD - 1:
            notice = replace(GOOD, device={**device, "hostname": "h" * (1 + extra)})
            assert len(dumps(notice.to_json())) == size
            return notice
    raise AssertionError(f"no notice of {size} bytes")


def test_the_payload_cap_when_sealing_is_inclusive():
    at_cap = _notice_of_payload_size(MAX_PAYLOAD)
    assert _open(seal_notice(at_cap, SERVER, bytes(BOX.public_key))) == at_cap
    over = _notice_of_payload_size(MAX_PAYLOAD + 1)
    assert _code(seal_notice, over, SERVER, bytes(BOX.public_key)) == "too_large"


@pytest.mark.parametrize("name", ["kid", "id", "to", "code"])
def test_ids_and_code_are_required(name):
    # None is allowed only for the optional device strings.
    assert _code(seal_notice, replace(GOOD, **{name: None}), SERVER, bytes(BOX.public_key)) == (
        "malformed"
    )
