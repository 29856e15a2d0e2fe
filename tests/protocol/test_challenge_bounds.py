"""Challenge bounds on both sides, and why an unverifiable token is refused.

Found by a mutation run over ``trust_protocol/challenge.py``: the unit tests checked
each limit from the outside (one past it is refused) but not always that the limit
itself is accepted, so ``<=`` could become ``<`` unnoticed. Each limit here is tried
at the value the protocol allows and one beyond it.
"""

from __future__ import annotations

import pytest

from tests.protocol.test_protocol_unit import (
    OTHER,
    SERVER,
    code_of,
    make_challenge,
    parse,
    raw_token,
)
from trust_protocol.challenge import (
    CHALLENGE_CONTEXT,
    MAX_TIMESTAMP,
    MAX_TOKEN_SIZE,
    MAX_URL,
    sign_challenge,
)
from trust_protocol.encoding import b64e, dumps


def _round_trips(**changes) -> None:
    challenge = make_challenge(**changes)
    assert parse(sign_challenge(challenge, SERVER.signing_key)) == challenge


def _refused(**changes) -> None:
    challenge = make_challenge(**changes)
    assert code_of(sign_challenge, challenge, SERVER.signing_key) == "malformed"
    assert code_of(parse, raw_token(challenge.to_json())) == "malformed"


def test_timestamps_up_to_2_53_minus_1():
    _round_trips(issued_at=MAX_TIMESTAMP - 60, expires_at=MAX_TIMESTAMP)
    _refused(issued_at=MAX_TIMESTAMP - 59, expires_at=MAX_TIMESTAMP + 1)


def test_origins_of_one_and_of_max_url_characters():
    _round_trips(origins=("x",))
    _round_trips(origins=("https://" + "a" * (MAX_URL - 8),))
    _refused(origins=("https://" + "a" * (MAX_URL - 7),))


def test_callback_of_one_and_of_max_url_characters():
    _round_trips(callback="x")
    _round_trips(callback="https://" + "a" * (MAX_URL - 8))
    _refused(callback="https://" + "a" * (MAX_URL - 7))


def test_token_size_cap_is_inclusive():
    """A token of exactly MAX_TOKEN_SIZE characters is read (and here refused for its
    shape: no base64url text has that length); one more character is ``too_large``."""
    signature = b64e(bytes(64))
    at_cap = "A" * (MAX_TOKEN_SIZE - len(signature) - 1) + "." + signature
    assert len(at_cap) == MAX_TOKEN_SIZE
    assert code_of(parse, at_cap) == "malformed"
    assert code_of(parse, "A" + at_cap) == "too_large"


def _signed_by_other(payload: object) -> str:
    data = payload if isinstance(payload, bytes) else dumps(payload)
    signature = OTHER.signing_key.sign(CHALLENGE_CONTEXT + data).signature
    return f"{b64e(data)}.{b64e(signature)}"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        # It names another key: another server's challenge, or one from a retired key.
        ({"kid": OTHER.kid, "v": 1}, "challenge_unknown"),
        # It claims our key, or names none, or something that is no key id: tampered.
        ({"kid": SERVER.kid, "v": 1}, "bad_challenge_signature"),
        ({"v": 1}, "bad_challenge_signature"),
        ({"kid": 5}, "bad_challenge_signature"),
        ({"kid": None}, "bad_challenge_signature"),
        # Not an object, or not JSON: nothing to read a kid from.
        ([OTHER.kid], "bad_challenge_signature"),
        ("kid", "bad_challenge_signature"),
        (b"\xff", "bad_challenge_signature"),
    ],
)
def test_why_an_unverifiable_token_is_refused(payload, code):
    assert code_of(parse, _signed_by_other(payload)) == code


def test_id_text_is_the_id_as_the_token_carries_it():
    """The service stores and looks challenges up by ``id_text``: it must be the wire id."""
    cid = bytes(range(250, 256)) + b"\x00" * 10  # encodes with '-' and '_'
    challenge = make_challenge(id=cid)
    assert challenge.id_text == "-vv8_f7_AAAAAAAAAAAAAA"
    assert challenge.id_text == challenge.to_json()["id"]
    assert parse(sign_challenge(challenge, SERVER.signing_key)).id_text == challenge.id_text
