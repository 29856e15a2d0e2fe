"""Hypothesis properties of notices and polls: nothing tampered, re-sealed or forged opens."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol.challenge import key_id
from trust_protocol.errors import ProtocolError
from trust_protocol.notice import MAX_SEALED, Notice, open_notice, seal_notice
from trust_protocol.poll import parse_poll, sign_poll, verify_poll

SERVER = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
LAPTOP_BOX = PrivateKey(b"\x03" * 32)
DESKTOP_BOX = PrivateKey(b"\x04" * 32)
DEVICE_SIGN = SigningKey(b"\x05" * 32)
NOW = 1_767_225_600

short = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF).filter(str.isprintable),
    min_size=1,
    max_size=40,
)
notices = st.builds(
    Notice,
    kind=st.just("approval"),
    kid=st.just(key_id(SERVER.verify_key)),
    id=short,
    to=st.just("laptop"),
    issued_at=st.integers(NOW - 1000, NOW),
    expires_at=st.integers(NOW + 1, NOW + 3000),
    code=st.text("ABCDEFGHJKLMNPQRSTUVWXYZ23456789-", min_size=1, max_size=32),
    device=st.fixed_dictionaries(
        {
            "hostname": st.none() | short,
            "platform": st.none() | short,
            "serial": st.none() | short,
            "first_seen": st.integers(0, NOW),
        }
    ),
)


def _open(sealed: bytes, box=LAPTOP_BOX, device_id="laptop") -> Notice:
    return open_notice(sealed, box, SERVER.verify_key, device_id, now=NOW)


@given(notices)
def test_round_trip(notice):
    assert _open(seal_notice(notice, SERVER, bytes(LAPTOP_BOX.public_key))) == notice


@settings(max_examples=200)
@given(notices, st.data())
def test_any_tampering_is_refused(notice, data):
    sealed = bytearray(seal_notice(notice, SERVER, bytes(LAPTOP_BOX.public_key)))
    i = data.draw(st.integers(0, len(sealed) - 1))
    sealed[i] ^= data.draw(st.integers(1, 255))
    try:
        _open(bytes(sealed))
    except ProtocolError as exc:
        assert exc.code in ("box_open_failed", "malformed")
    else:
        raise AssertionError("a tampered notice opened")


@given(notices)
def test_wrong_key_wrong_signer_and_resealing_are_refused(notice):
    for_laptop = seal_notice(notice, SERVER, bytes(LAPTOP_BOX.public_key))
    try:
        _open(for_laptop, box=DESKTOP_BOX, device_id="laptop")
        raise AssertionError("opened with another device's box key")
    except ProtocolError as exc:
        assert exc.code == "box_open_failed"
    forged = seal_notice(notice, OTHER, bytes(LAPTOP_BOX.public_key))
    try:
        _open(forged)
        raise AssertionError("a notice signed by another key opened")
    except ProtocolError as exc:
        assert exc.code == "bad_notice_signature"
    # The desktop's notice, opened by its holder and re-sealed to the laptop, says "to desktop".
    desktop_copy = Notice(**{**notice.__dict__, "to": "desktop"})
    resealed = seal_notice(desktop_copy, SERVER, bytes(LAPTOP_BOX.public_key))
    try:
        _open(resealed)
        raise AssertionError("a re-sealed notice was accepted")
    except ProtocolError as exc:
        assert exc.code == "notice_wrong_device"


@given(st.binary(max_size=MAX_SEALED + 10))
def test_random_bytes_never_open(blob):
    try:
        _open(blob)
    except ProtocolError as exc:
        assert exc.code in ("malformed", "too_large", "box_open_failed")
    else:
        raise AssertionError("random bytes opened as a notice")


@given(st.binary(max_size=600))
def test_poll_parser_refuses_junk_with_a_code(blob):
    try:
        poll = parse_poll(blob)
        verify_poll(poll, bytes(DEVICE_SIGN.verify_key), now=time.time(), window=120)
    except ProtocolError as exc:
        assert exc.code in (
            "malformed",
            "too_large",
            "unsupported_version",
            "bad_poll_signature",
            "poll_expired",
        )
    else:
        raise AssertionError("junk passed as a poll")


@given(st.integers(-1000, 1000), st.text(min_size=1, max_size=64))
def test_poll_signature_binds_device_and_time(offset, other_id):
    body = sign_poll("laptop", DEVICE_SIGN, NOW)
    poll = parse_poll(json.dumps(body).encode())
    ok = abs(offset) <= 120
    try:
        verify_poll(poll, bytes(DEVICE_SIGN.verify_key), now=NOW + offset, window=120)
        assert ok
    except ProtocolError as exc:
        assert not ok and exc.code == "poll_expired"
    # Swapping the device id in the signed payload breaks the signature.
    if other_id != "laptop":
        forged = dict(body)
        from trust_protocol.encoding import b64e, dumps

        forged["poll"] = b64e(dumps({"v": 1, "device_id": other_id, "time": NOW}))
        try:
            verify_poll(
                parse_poll(json.dumps(forged).encode()),
                bytes(DEVICE_SIGN.verify_key),
                now=NOW,
                window=120,
            )
            raise AssertionError("a poll with a swapped id verified")
        except ProtocolError as exc:
            assert exc.code in ("bad_poll_signature", "malformed")
