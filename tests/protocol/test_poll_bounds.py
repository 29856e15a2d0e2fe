"""The signed poll's limits on both sides, and each reason it is refused (§14.4 of the spec).

Written for the mutation run over ``trust_protocol/poll.py``: the vectors and properties
try a few refusals, but not each limit at the value allowed and one beyond it, so a
``<=`` turned into ``<`` (or a check dropped) would go unnoticed.
"""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from trust_protocol.encoding import b64e, dumps
from trust_protocol.errors import ProtocolError
from trust_protocol.poll import (
    MAX_ID,
    MAX_PAYLOAD,
    MAX_POLL,
    POLL_CONTEXT,
    Poll,
    parse_poll,
    poll_json,
    sign_poll,
    verify_poll,
)

KEY = SigningKey(b"\x05" * 32)
OTHER = SigningKey(b"\x06" * 32)
NOW = 1_767_225_600
MAX_TIME = 2**53 - 1


def _body(fields: object, *, key: SigningKey = KEY, raw: bytes | None = None) -> bytes:
    payload = dumps(fields) if raw is None else raw
    signature = key.sign(POLL_CONTEXT + payload).signature
    return json.dumps({"poll": b64e(payload), "signature": b64e(signature)}).encode()


def _code(body: bytes) -> str:
    with pytest.raises(ProtocolError) as err:
        parse_poll(body)
    return err.value.code


def _fields(device_id: object = "laptop", time: object = NOW, v: object = 1) -> dict:
    return {"v": v, "device_id": device_id, "time": time}


def test_a_signed_poll_parses_and_verifies():
    poll = parse_poll(json.dumps(sign_poll("laptop", KEY, NOW)).encode())
    assert poll == Poll("laptop", NOW, dumps(_fields()), poll.signature)
    assert poll_json(poll) == {"device_id": "laptop", "time": NOW}
    verify_poll(poll, bytes(KEY.verify_key), now=NOW, window=120)


def test_device_id_of_one_and_of_max_id_characters():
    assert parse_poll(_body(_fields(device_id="a"))).device_id == "a"
    assert parse_poll(_body(_fields(device_id="a" * MAX_ID))).device_id == "a" * MAX_ID
    assert _code(_body(_fields(device_id="a" * (MAX_ID + 1)))) == "malformed"
    assert _code(_body(_fields(device_id=""))) == "malformed"


def test_device_id_must_be_printable():
    assert _code(_body(_fields(device_id="lap\x00top"))) == "malformed"
    assert _code(_body(_fields(device_id="   "))) == "malformed"


def test_time_from_zero_to_2_53_minus_1():
    assert parse_poll(_body(_fields(time=0))).time == 0
    assert parse_poll(_body(_fields(time=MAX_TIME))).time == MAX_TIME
    assert _code(_body(_fields(time=MAX_TIME + 1))) == "malformed"
    assert _code(_body(_fields(time=-1))) == "malformed"
    assert _code(_body(_fields(time=True))) == "malformed"
    assert _code(_body(_fields(time=1.5))) == "malformed"


def test_only_version_1():
    assert _code(_body(_fields(v=2))) == "unsupported_version"
    assert _code(_body(_fields(v=0))) == "unsupported_version"
    assert _code(_body(_fields(v="1"))) == "malformed"


def test_the_payload_must_be_the_canonical_three_fields():
    assert _code(_body({**_fields(), "extra": 1})) == "malformed"
    missing = _fields()
    del missing["time"]
    assert _code(_body(missing)) == "malformed"
    spaced = json.dumps(_fields()).encode()  # json.dumps puts a space after ':' and ','
    assert spaced != dumps(_fields())
    assert _code(_body(None, raw=spaced)) == "malformed"
    assert _code(_body(None, raw=b"[1]")) == "malformed"
    assert _code(_body(None, raw=b'"laptop"')) == "malformed"


def test_payload_size_cap():
    # The cap is checked on the decoded payload: one byte over it is refused as too large.
    assert _code(_body(None, raw=b" " * (MAX_PAYLOAD + 1))) == "too_large"
    assert _code(_body(None, raw=b" " * MAX_PAYLOAD + b"")) == "malformed"


def test_body_size_cap_is_inclusive():
    body = _body(_fields())
    padded = body[:-1] + b" " * (MAX_POLL - len(body)) + b"}"
    assert len(padded) == MAX_POLL
    assert parse_poll(padded).device_id == "laptop"
    assert _code(body[:-1] + b" " * (MAX_POLL - len(body) + 1) + b"}") == "too_large"


def test_the_body_holds_exactly_poll_and_signature():
    good = json.loads(_body(_fields()))
    assert _code(json.dumps({**good, "x": 1}).encode()) == "malformed"
    assert _code(json.dumps({"poll": good["poll"]}).encode()) == "malformed"
    assert _code(json.dumps([good]).encode()) == "malformed"
    assert _code(json.dumps({**good, "signature": b64e(b"\x00" * 63)}).encode()) == "malformed"
    assert _code(json.dumps({**good, "poll": 5}).encode()) == "malformed"


def test_signature_must_be_the_registered_key_under_the_poll_context():
    poll = parse_poll(_body(_fields(), key=OTHER))
    with pytest.raises(ProtocolError) as err:
        verify_poll(poll, bytes(KEY.verify_key), now=NOW, window=120)
    assert err.value.code == "bad_poll_signature"
    payload = dumps(_fields())
    no_context = json.dumps(
        {"poll": b64e(payload), "signature": b64e(KEY.sign(payload).signature)}
    ).encode()
    with pytest.raises(ProtocolError) as err:
        verify_poll(parse_poll(no_context), bytes(KEY.verify_key), now=NOW, window=120)
    assert err.value.code == "bad_poll_signature"


@pytest.mark.parametrize("offset", [-120, 120])
def test_the_window_is_inclusive_on_both_sides(offset):
    poll = parse_poll(_body(_fields()))
    verify_poll(poll, bytes(KEY.verify_key), now=NOW + offset, window=120)
    with pytest.raises(ProtocolError) as err:
        verify_poll(
            poll, bytes(KEY.verify_key), now=NOW + offset + (1 if offset > 0 else -1), window=120
        )
    assert err.value.code == "poll_expired"


def test_a_bad_signature_is_reported_before_the_time():
    poll = parse_poll(_body(_fields(), key=OTHER))
    with pytest.raises(ProtocolError) as err:
        verify_poll(poll, bytes(KEY.verify_key), now=NOW + 10_000, window=120)
    assert err.value.code == "bad_poll_signature"
