"""Property tests: no mutation of a valid response is ever accepted.

Each property starts from real, valid envelopes and mutates them: byte flips,
truncation, junk insertion, fields swapped between envelopes, bodies re-signed
with the wrong key, plaintexts re-boxed to the wrong key, and arbitrary values
inside a correctly signed and boxed body. The verifier must either raise
:class:`ProtocolError` (never any other exception) or, for a mutation that is
semantically a no-op (envelope whitespace, key order), return exactly the
content of the original.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from trust_protocol.challenge import Challenge, parse_challenge, sign_challenge
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d, b64e, dumps, loads
from trust_protocol.errors import ProtocolError
from trust_protocol.response import (
    RESPONSE_CONTEXT,
    ResponseBody,
    VerifiedResponse,
    open_response,
    seal_response,
)
from trust_protocol.server_keys import ServerKeys

PROPS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = 1_767_225_605
ORIGIN = "https://idp.example.com"


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"devicetrust properties/" + label.encode()).digest()


SERVER = ServerKeys.from_seeds(_seed("server sign"), _seed("server box"))
LAPTOP = DeviceKeys.from_seeds("laptop-0001", _seed("laptop sign"), _seed("laptop box"))
DESKTOP = DeviceKeys.from_seeds("desktop-0002", _seed("desktop sign"), _seed("desktop box"))
PLATFORM = {"hardware_uuid": "uuid-1", "serial": "SER1", "os": "linux", "hostname": "h"}


def _challenge(label: str, purpose: str = "authenticate") -> tuple[str, Challenge]:
    cid = _seed("challenge " + label)[:16]
    challenge = Challenge(
        id=cid,
        purpose=purpose,
        issued_at=NOW - 5,
        expires_at=NOW + 55,
        box_key=bytes(SERVER.challenge_box_key(cid).public_key),
        origins=(ORIGIN,),
        callback=ORIGIN + "/agent/v1/callback",
        binding="login:" + label,
        kid=SERVER.kid,
    )
    return sign_challenge(challenge, SERVER.signing_key), challenge


def _body(token: str, keys: DeviceKeys, **changes) -> ResponseBody:
    fields = {
        "challenge_token": token,
        "device": keys.public_json(),
        "platform": PLATFORM,
        "agent_version": "0.1.0",
        "agent_clock": NOW + 0.5,
    }
    fields.update(changes)
    return ResponseBody(**fields)


def _seal(token: str, challenge: Challenge, keys: DeviceKeys, label: str, **changes) -> bytes:
    return seal_response(
        _body(token, keys, **changes),
        challenge,
        keys,
        ephemeral_key=PrivateKey(_seed("ephemeral " + label)),
        nonce=_seed("nonce " + label)[:24],
    )


def verify(envelope: bytes | str) -> VerifiedResponse:
    return open_response(
        envelope,
        verify_key=SERVER.verify_key,
        box_key_for=SERVER.challenge_box_key,
        now=NOW,
        purposes=("authenticate",),
    )


TOKEN_A, CHALLENGE_A = _challenge("a")
TOKEN_B, CHALLENGE_B = _challenge("b")
ENV_A = _seal(TOKEN_A, CHALLENGE_A, LAPTOP, "a")
ENV_B = _seal(TOKEN_B, CHALLENGE_B, DESKTOP, "b")
OK_A = verify(ENV_A)
OK_B = verify(ENV_B)
BASELINES = {ENV_A: OK_A, ENV_B: OK_B}


def _plaintext(envelope: bytes, challenge: Challenge) -> bytes:
    env = json.loads(envelope)
    return Box(SERVER.challenge_box_key(challenge.id), PublicKey(b64d(env["epk"]))).decrypt(
        b64d(env["box"])
    )


PLAIN_A = _plaintext(ENV_A, CHALLENGE_A)
SIG_A, BODY_A = PLAIN_A[:64], PLAIN_A[64:]


def _rebox(plaintext: bytes, recipient: bytes, cid: bytes = CHALLENGE_A.id) -> bytes:
    eph = PrivateKey(_seed("rebox"))
    sealed = Box(eph, PublicKey(recipient)).encrypt(plaintext, _seed("rebox nonce")[:24])
    return dumps(
        {"v": 1, "cid": b64e(cid), "epk": b64e(bytes(eph.public_key)), "box": b64e(bytes(sealed))}
    )


def outcome(envelope: bytes | str, baseline: VerifiedResponse = OK_A) -> str:
    """Run the verifier: 'rejected', or 'same' when it returns exactly ``baseline``.

    Any other exception, or an accepted response with different content, fails.
    """
    try:
        result = verify(envelope)
    except ProtocolError:
        return "rejected"
    assert result == baseline, "a mutated response was accepted with other content"
    return "same"


def test_baselines_are_valid_and_distinct():
    assert OK_A.device_id == "laptop-0001" and OK_B.device_id == "desktop-0002"
    assert OK_A.challenge.id != OK_B.challenge.id
    assert OK_A.clock_skew == 0.5


# -- byte-level mutations of the envelope --------------------------------------------------


@PROPS
@given(st.data())
def test_byte_flip_anywhere_is_never_accepted(data):
    envelope = data.draw(st.sampled_from([ENV_A, ENV_B]))
    index = data.draw(st.integers(0, len(envelope) - 1))
    mask = data.draw(st.integers(1, 255))
    mutated = bytearray(envelope)
    mutated[index] ^= mask
    outcome(bytes(mutated), BASELINES[envelope])


@PROPS
@given(st.data())
def test_several_byte_flips_are_never_accepted(data):
    mutated = bytearray(ENV_A)
    positions = data.draw(st.sets(st.integers(0, len(ENV_A) - 1), min_size=2, max_size=8))
    for index in positions:
        mutated[index] ^= data.draw(st.integers(1, 255))
    outcome(bytes(mutated))


@PROPS
@given(st.integers(0, len(ENV_A) - 1))
def test_truncation_is_always_rejected(length):
    with pytest.raises(ProtocolError):
        verify(ENV_A[:length])


@PROPS
@given(st.data())
def test_cutting_out_a_slice_is_never_accepted(data):
    start = data.draw(st.integers(0, len(ENV_A) - 1))
    end = data.draw(st.integers(start + 1, len(ENV_A)))
    outcome(ENV_A[:start] + ENV_A[end:])


@PROPS
@given(st.integers(0, len(ENV_A)), st.binary(min_size=1, max_size=64))
def test_inserting_junk_is_never_accepted(position, junk):
    # Inserting JSON whitespace between tokens is a no-op and may be accepted as-is.
    outcome(ENV_A[:position] + junk + ENV_A[position:])


@PROPS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_rejected(junk):
    with pytest.raises(ProtocolError):
        verify(junk)


@PROPS
@given(st.text(max_size=2048))
def test_arbitrary_text_is_rejected(junk):
    with pytest.raises(ProtocolError):
        verify(junk)


@PROPS
@given(
    st.permutations(["v", "cid", "epk", "box"]),
    st.lists(st.sampled_from([" ", "\t", "\n", "\r", ""]), min_size=20, max_size=20),
)
def test_envelope_whitespace_and_key_order_are_no_ops(order, spaces):
    fields = json.loads(ENV_A)
    ws = iter(spaces)
    parts = [
        f'{next(ws)}"{key}"{next(ws)}:{next(ws)}{json.dumps(fields[key])}{next(ws)}'
        for key in order
    ]
    text = "{" + ",".join(parts) + "}"
    assert verify(text.encode()) == OK_A
    assert verify(text) == OK_A


# -- swapped fields ------------------------------------------------------------------------

FIELD_SUBSETS = [
    subset for n in range(4) for subset in itertools.combinations(("cid", "epk", "box"), n)
]


@pytest.mark.parametrize("from_b", FIELD_SUBSETS, ids=lambda s: "+".join(s) or "none")
def test_fields_swapped_between_envelopes(from_b):
    a, b = json.loads(ENV_A), json.loads(ENV_B)
    mixed = {key: (b[key] if key in from_b else a[key]) for key in a}
    if not from_b:
        assert verify(dumps(mixed)) == OK_A
    elif len(from_b) == 3:
        assert verify(dumps(mixed)) == OK_B
    else:
        with pytest.raises(ProtocolError) as info:
            verify(dumps(mixed))
        assert info.value.code == "box_open_failed"


def test_challenge_swapped_inside_a_validly_signed_body():
    # The laptop signs a body echoing challenge B but boxes it to challenge A's key.
    body = dumps(_body(TOKEN_B, LAPTOP).to_json())
    signature = LAPTOP.signing_key.sign(RESPONSE_CONTEXT + body).signature
    envelope = _rebox(signature + body, CHALLENGE_A.box_key)
    with pytest.raises(ProtocolError) as info:
        verify(envelope)
    assert info.value.code == "challenge_mismatch"


def test_device_section_swapped_under_the_original_signature():
    body = dumps(_body(TOKEN_A, LAPTOP, device=DESKTOP.public_json()).to_json())
    envelope = _rebox(SIG_A + body, CHALLENGE_A.box_key)
    with pytest.raises(ProtocolError) as info:
        verify(envelope)
    assert info.value.code == "bad_device_signature"


# -- wrong keys ----------------------------------------------------------------------------


@PROPS
@given(st.binary(min_size=32, max_size=32))
def test_body_resigned_with_a_wrong_device_key(seed):
    wrong = SigningKey(seed)
    assume(bytes(wrong.verify_key) != LAPTOP.sign_public)
    signature = wrong.sign(RESPONSE_CONTEXT + BODY_A).signature
    with pytest.raises(ProtocolError) as info:
        verify(_rebox(signature + BODY_A, CHALLENGE_A.box_key))
    assert info.value.code == "bad_device_signature"


@PROPS
@given(st.binary(min_size=32, max_size=32))
def test_plaintext_reboxed_to_a_wrong_key(secret):
    wrong = bytes(PrivateKey(secret).public_key)
    assume(wrong != CHALLENGE_A.box_key)
    with pytest.raises(ProtocolError) as info:
        verify(_rebox(PLAIN_A, wrong))
    assert info.value.code == "box_open_failed"


@PROPS
@given(st.binary(min_size=16, max_size=64))
def test_plaintext_reboxed_under_another_cid(cid):
    # Sealed to the key derived for ``cid`` and named so: the box opens, the ids differ.
    assume(cid != CHALLENGE_A.id)
    recipient = bytes(SERVER.challenge_box_key(cid).public_key)
    with pytest.raises(ProtocolError) as info:
        verify(_rebox(PLAIN_A, recipient, cid))
    assert info.value.code == "challenge_mismatch"


@PROPS
@given(st.data())
def test_body_byte_flip_under_the_original_signature(data):
    index = data.draw(st.integers(0, len(BODY_A) - 1))
    mask = data.draw(st.integers(1, 255))
    body = bytearray(BODY_A)
    body[index] ^= mask
    with pytest.raises(ProtocolError):
        verify(_rebox(SIG_A + bytes(body), CHALLENGE_A.box_key))


@PROPS
@given(st.binary(max_size=200))
def test_signature_replaced_by_junk(junk):
    signature = (junk + bytes(64))[:64]
    assume(signature != SIG_A)
    with pytest.raises(ProtocolError) as info:
        verify(_rebox(signature + BODY_A, CHALLENGE_A.box_key))
    assert info.value.code == "bad_device_signature"


# -- arbitrary content inside a genuinely signed and boxed body ----------------------------

# Text that may hold lone surrogates (json.dumps writes them as \\uXXXX escapes).
TEXT = st.text(max_size=300) | st.builds(
    "{}{}{}".format, st.text(max_size=20), st.characters(categories=["Cs"]), st.text(max_size=20)
)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy:
    """Arbitrary JSON values whose strings come from ``text``."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**400), max_value=10**400)
        | st.sampled_from([2**53, 2**64, -(2**63), 10**308, 10**309, 10**400])
        | st.floats(allow_nan=False, allow_infinity=False)
        | text,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(text.map(lambda t: t[:8]), children, max_size=4)
        ),
        max_leaves=12,
    )


JSON_VALUES = json_values(TEXT)
BODY_PATHS = [
    ("v",),
    ("challenge",),
    ("device",),
    ("device", "id"),
    ("device", "sign_key"),
    ("device", "box_key"),
    ("platform",),
    ("platform", "serial"),
    ("agent",),
    ("agent", "version"),
    ("agent", "clock"),
    ("data",),
]


@PROPS
@given(st.sampled_from(BODY_PATHS), JSON_VALUES | st.just(KeyError))
def test_any_value_in_a_signed_body_is_judged_without_crashing(path, value):
    """A device key the attacker owns signs whatever it likes; only ProtocolError may result."""
    body = json.loads(BODY_A)
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    signature = LAPTOP.signing_key.sign(RESPONSE_CONTEXT + raw).signature
    try:
        result = verify(_rebox(signature + raw, CHALLENGE_A.box_key))
    except ProtocolError:
        return
    # Accepted: then it is a faithful, well-typed reading of the signed body.
    assert result.challenge == CHALLENGE_A
    assert math.isfinite(result.agent_clock) and abs(result.clock_skew) <= 300
    assert isinstance(result.device_id, str) and 0 < len(result.device_id) <= 64
    assert len(result.sign_key) == 32 and len(result.box_key) == 32
    assert isinstance(result.data, dict) and isinstance(result.platform, dict)
    assert all(isinstance(v, str) for v in result.platform.values())
    assert isinstance(result.agent_version, str) and len(result.agent_version) <= 256
    # Everything accepted can be stored and logged as UTF-8 JSON (no lone surrogates).
    dumps([result.device_id, result.agent_version, result.platform, result.data])


STRING_PATHS = [
    ("device", "id"),
    ("platform", "serial"),
    ("agent", "version"),
    ("data", "note"),
]


@PROPS
@given(st.sampled_from(STRING_PATHS), TEXT)
def test_any_text_in_a_signed_body_is_read_exactly_or_refused(path, text):
    body = json.loads(BODY_A)
    body[path[0]][path[1]] = text
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()  # \\u escapes
    signature = LAPTOP.signing_key.sign(RESPONSE_CONTEXT + raw).signature
    try:
        result = verify(_rebox(signature + raw, CHALLENGE_A.box_key))
    except ProtocolError as exc:
        assert exc.code == "malformed"
        return
    read = {
        ("device", "id"): result.device_id,
        ("platform", "serial"): result.platform.get("serial"),
        ("agent", "version"): result.agent_version,
        ("data", "note"): result.data.get("note"),
    }[path]
    assert read == text
    text.encode("utf-8")  # accepted text is valid Unicode: it can be stored and logged


# Any JSON number: huge integers, exponents beyond a double's range, long fractions.
NUMBER_LITERALS = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,400})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?\Z"
) | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 400, "true"])


@PROPS
@given(NUMBER_LITERALS)
def test_any_number_as_the_agent_clock_in_a_signed_body(literal):
    clock_text = json.dumps(OK_A.agent_clock).encode()
    assert BODY_A.count(clock_text) == 1
    raw = BODY_A.replace(clock_text, literal.encode())
    signature = LAPTOP.signing_key.sign(RESPONSE_CONTEXT + raw).signature
    try:
        result = verify(_rebox(signature + raw, CHALLENGE_A.box_key))
    except ProtocolError as exc:
        assert exc.code in ("malformed", "clock_skew")
        return
    assert math.isfinite(result.agent_clock) and abs(result.clock_skew) <= 300


# -- the challenge parser ------------------------------------------------------------------


@PROPS
@given(st.text(max_size=1024) | st.from_regex(r"\A[A-Za-z0-9_=+/.-]{0,400}\Z"))
def test_challenge_parser_on_arbitrary_strings(text):
    with pytest.raises(ProtocolError):
        parse_challenge(text, SERVER.verify_key)


@PROPS
@given(st.none() | st.integers() | st.binary() | st.lists(st.text(), max_size=3))
def test_challenge_parser_on_non_strings(value):
    with pytest.raises(ProtocolError) as info:
        parse_challenge(value, SERVER.verify_key)
    assert info.value.code == "malformed"


@PROPS
@given(st.data())
def test_challenge_token_mutations(data):
    index = data.draw(st.integers(0, len(TOKEN_A) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    assume(replacement != TOKEN_A[index])
    mutated = TOKEN_A[:index] + replacement + TOKEN_A[index + 1 :]
    with pytest.raises(ProtocolError):
        parse_challenge(mutated, SERVER.verify_key)


# -- encodings -----------------------------------------------------------------------------


@PROPS
@given(st.binary(max_size=200))
def test_base64url_round_trip(raw):
    text = b64e(raw)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64d(text) == raw
    assert b64d(text, length=len(raw)) == raw


@PROPS
@given(st.text(alphabet="ABCDEFabcdef0123456789-_+/= \n.", max_size=40) | st.text(max_size=40))
def test_base64url_decode_is_canonical(text):
    """Whatever decodes re-encodes to the very same text: one value, one spelling."""
    try:
        raw = b64d(text)
    except ProtocolError:
        return
    assert b64e(raw) == text


@PROPS
@given(json_values(st.text(max_size=50)))
def test_strict_json_reads_what_canonical_json_writes(value):
    raw = dumps(value)
    if _depth(value) > 16:
        with pytest.raises(ProtocolError):
            loads(raw, max_size=len(raw))
    else:
        assert loads(raw, max_size=len(raw)) == value


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@PROPS
@given(st.binary(max_size=512) | st.text(max_size=512))
def test_strict_json_raises_only_protocol_errors(data):
    try:
        loads(data, max_size=1024)
    except ProtocolError:
        pass
