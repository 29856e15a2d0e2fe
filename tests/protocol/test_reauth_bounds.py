"""Re-authentication grants and tokens: each limit on both sides, each refusal (§17).

Written for the mutation run over ``trust_protocol/reauth.py``: the vectors fix the bytes
of a few grants, and this file tries each field limit at the value allowed and one
beyond, the token's stored hash computed a second way, and each check of
:func:`open_grant` with a grant that passes all the others.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol.challenge import key_id
from trust_protocol.encoding import dumps
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import seal_signed
from trust_protocol.reauth import (
    GRANT_CONTEXT,
    MAX_ID,
    MAX_LIFETIME,
    MAX_PAYLOAD,
    MAX_SEALED,
    MAX_TIMESTAMP,
    Grant,
    new_token,
    open_grant,
    presented,
    seal_grant,
    token_hash,
)

SERVER = SigningKey(b"\x07" * 32)
OTHER = SigningKey(b"\x08" * 32)
BOX = PrivateKey(b"\x09" * 32)
NOW = 1_767_225_600
TOKEN = "A" * 42 + "Q"  # 43 base64url characters

GOOD = Grant(
    kid=key_id(SERVER.verify_key),
    to="laptop",
    challenge="c-1",
    family="f-1",
    token=TOKEN,
    issued_at=NOW - 10,
    expires_at=NOW + 3600,
)


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError) as err:
        fn(*args, **kwargs)
    return err.value.code


def _open(sealed: bytes, *, now: float = NOW, device_id: str = "laptop") -> Grant:
    return open_grant(sealed, BOX, SERVER.verify_key, device_id, now=now)


def _round_trips(grant: Grant) -> None:
    sealed = seal_grant(grant, SERVER, bytes(BOX.public_key))
    assert _open(sealed, now=grant.issued_at, device_id=grant.to) == grant


def _refused(grant: Grant) -> None:
    assert _code(seal_grant, grant, SERVER, bytes(BOX.public_key)) == "malformed"
    sealed = seal_signed(dumps(grant.to_json()), GRANT_CONTEXT, SERVER, bytes(BOX.public_key))
    assert _code(_open, sealed, now=0) == "malformed"


def test_new_tokens_are_32_random_bytes_in_43_characters():
    tokens = {new_token() for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        assert len(token) == 43
        assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_token_hash_binds_device_and_key():
    key = bytes(range(32))
    device = "laptop-é"
    raw = device.encode()
    expect = hashlib.sha256(
        b"devicetrust/v1/reauth-token\x00"
        + struct.pack(">H", len(raw))
        + raw
        + key
        + TOKEN.encode()
    ).hexdigest()
    assert token_hash(TOKEN, device, key) == expect
    assert token_hash(TOKEN, "laptop", key) != token_hash(TOKEN, "laptop2", key)
    assert token_hash(TOKEN, "laptop", key) != token_hash(TOKEN, "laptop", bytes(32))
    for bad_token, bad_key in ((TOKEN[:-1], key), (TOKEN + "A", key), (TOKEN, key[:31])):
        assert _code(token_hash, bad_token, "laptop", bad_key) == "malformed"
    assert _code(token_hash, TOKEN, "laptop", key + b"\x00") == "malformed"
    assert _code(token_hash, "!" * 43, "laptop", key) == "malformed"


def test_token_hash_length_prefix_is_unsigned_16_bit_big_endian():
    key = bytes(range(32))
    for size in (255, 256, 32768, 65535):
        device = "d" * size
        expect = hashlib.sha256(
            b"devicetrust/v1/reauth-token\x00"
            + size.to_bytes(2, "big")
            + device.encode()
            + key
            + TOKEN.encode()
        ).hexdigest()
        assert token_hash(TOKEN, device, key) == expect


def test_presented_token():
    assert presented({}) is None
    assert presented({"other": 1}) is None
    assert presented({"reauth": TOKEN}) == TOKEN
    for bad in (TOKEN[:-1], TOKEN + "A", "!" * 43, 5, None, [TOKEN]):
        assert _code(presented, {"reauth": bad}) == "malformed"


def test_a_good_grant_round_trips():
    _round_trips(GOOD)


@pytest.mark.parametrize("name", ["to", "challenge", "family"])
def test_names_of_one_and_of_max_id_characters(name):
    _round_trips(replace(GOOD, **{name: "a"}))
    _round_trips(replace(GOOD, **{name: "a" * MAX_ID}))
    _refused(replace(GOOD, **{name: "a" * (MAX_ID + 1)}))
    _refused(replace(GOOD, **{name: ""}))
    _refused(replace(GOOD, **{name: "a\tb"}))
    _refused(replace(GOOD, **{name: 5}))


def test_kid_limits():
    _refused(replace(GOOD, kid="a" * (MAX_ID + 1)))
    _refused(replace(GOOD, kid=""))
    assert seal_grant(replace(GOOD, kid="a" * MAX_ID), SERVER, bytes(BOX.public_key))


def test_the_token_is_43_base64url_characters():
    for bad in (TOKEN[:-1], TOKEN + "A", "=" * 43, None):
        _refused(replace(GOOD, token=bad))


def test_timestamps_and_lifetime():
    _round_trips(replace(GOOD, issued_at=0, expires_at=1))
    _round_trips(replace(GOOD, issued_at=MAX_TIMESTAMP - 1, expires_at=MAX_TIMESTAMP))
    _round_trips(replace(GOOD, expires_at=GOOD.issued_at + MAX_LIFETIME))
    _refused(replace(GOOD, expires_at=GOOD.issued_at + MAX_LIFETIME + 1))
    _refused(replace(GOOD, expires_at=GOOD.issued_at))
    _refused(replace(GOOD, issued_at=MAX_TIMESTAMP, expires_at=MAX_TIMESTAMP + 1))
    _refused(replace(GOOD, issued_at=-1))
    _refused(replace(GOOD, issued_at=False))


def _sealed_fields(obj: object, key: SigningKey = SERVER, raw: bytes | None = None) -> bytes:
    payload = dumps(obj) if raw is None else raw
    return seal_signed(payload, GRANT_CONTEXT, key, bytes(BOX.public_key))


def test_open_grant_refusals_each_with_its_code():
    fields = GOOD.to_json()
    assert _open(_sealed_fields(fields)) == GOOD
    assert _code(_open, _sealed_fields(fields, key=OTHER)) == "bad_grant_signature"
    notice_context = seal_signed(
        dumps(fields), b"devicetrust/v1/notice\x00", SERVER, bytes(BOX.public_key)
    )
    assert _code(_open, notice_context) == "bad_grant_signature"
    assert _code(_open, _sealed_fields([fields])) == "malformed"
    assert _code(_open, _sealed_fields({**fields, "v": 2})) == "unsupported_version"
    assert _code(_open, _sealed_fields({**fields, "kind": "approval"})) == "malformed"
    assert _code(_open, _sealed_fields({**fields, "x": 1})) == "malformed"
    assert _code(_open, _sealed_fields(None, raw=json.dumps(fields).encode())) == "malformed"
    assert _code(_open, _sealed_fields({**fields, "expires_at": "1"})) == "malformed"
    other_kid = {**fields, "kid": key_id(OTHER.verify_key)}
    assert _code(_open, _sealed_fields(other_kid)) == "bad_grant_signature"
    assert _code(_open, _sealed_fields(fields), device_id="desktop") == "grant_wrong_device"


def test_sealed_size_bounds():
    assert _code(_open, b"\x00" * MAX_SEALED) == "box_open_failed"
    assert _code(_open, b"\x00" * (MAX_SEALED + 1)) == "too_large"
    big = dumps({**GOOD.to_json(), "pad": "x" * MAX_PAYLOAD})
    assert _code(_open, _sealed_fields(None, raw=big)) == "too_large"


def test_expiry_is_exclusive():
    sealed = seal_grant(GOOD, SERVER, bytes(BOX.public_key))
    assert _open(sealed, now=GOOD.expires_at - 1) == GOOD
    assert _code(_open, sealed, now=GOOD.expires_at) == "grant_expired"
