"""Unit tests of each check and limit of protocol v1 (trust_protocol/).

One test per rule of docs/protocol.md, each at its boundary: the largest value
that passes and the smallest that does not. The last section checks that the
specification's tables agree with the code.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from trust_protocol import PROTOCOL_VERSION, PURPOSES
from trust_protocol.challenge import (
    CHALLENGE_CONTEXT,
    MAX_TOKEN_SIZE,
    Challenge,
    key_id,
    parse_challenge,
    sign_challenge,
)
from trust_protocol.device_keys import DeviceKeys, fingerprint
from trust_protocol.encoding import b64d, b64e, dumps, loads, require
from trust_protocol.errors import CODES, ProtocolError
from trust_protocol.ports import DEFAULT_AGENT_PORTS, parse_ports
from trust_protocol.response import (
    RESPONSE_CONTEXT,
    RegisteredDevice,
    ResponseBody,
    check_binding,
    check_registration,
    open_response,
    seal_response,
)
from trust_protocol.server_keys import HKDF_INFO_PREFIX, HKDF_SALT, ServerKeys

NOW = 1_767_225_605
SERVER = ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 32)
OTHER = ServerKeys.from_seeds(b"\x33" * 32, b"\x44" * 32)
DEVICE = DeviceKeys.from_seeds("device-1", b"\x55" * 32, b"\x66" * 32)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kwargs)
    return info.value.code


def make_challenge(**changes) -> Challenge:
    cid = changes.pop("id", b"\x01" * 16)
    fields = {
        "id": cid,
        "purpose": "authenticate",
        "issued_at": NOW - 5,
        "expires_at": NOW + 55,
        "box_key": bytes(SERVER.challenge_box_key(cid).public_key),
        "origins": ("https://idp.example.com",),
        "callback": "https://idp.example.com/agent/v1/callback",
        "binding": "login:t1",
        "kid": SERVER.kid,
    }
    fields.update(changes)
    return Challenge(**fields)


def raw_token(payload: object, key: ServerKeys = SERVER) -> str:
    """Sign any payload, bypassing the signer's own validation (a buggy or hostile server)."""
    data = payload if isinstance(payload, bytes) else dumps(payload)
    signature = key.signing_key.sign(CHALLENGE_CONTEXT + data).signature
    return f"{b64e(data)}.{b64e(signature)}"


def parse(token: object) -> Challenge:
    return parse_challenge(token, SERVER.verify_key)


# -- challenge: signing and parsing refuse the same things -----------------------------------

INVALID_CHALLENGES = {
    "lifetime 121 s": {"expires_at": NOW - 5 + 121},
    "lifetime 0": {"expires_at": NOW - 5},
    "expires before issued": {"expires_at": NOW - 6},
    "id 15 bytes": {"id": b"\x01" * 15},
    "id 65 bytes": {"id": b"\x01" * 65},
    "purpose unknown": {"purpose": "login"},
    "17 origins": {"origins": tuple(f"https://{i}.example" for i in range(17))},
    "empty origin": {"origins": ("",)},
    "origin too long": {"origins": ("https://" + "a" * 2041,)},
    "empty callback": {"callback": ""},
    "callback too long": {"callback": "https://" + "a" * 2041},
    "binding 257 chars": {"binding": "b" * 257},
    "kid 65 chars": {"kid": "k" * 65},
    "box_key 31 bytes": {"box_key": b"\x00" * 31},
    "negative issued_at": {"issued_at": -10, "expires_at": 50},
    "issued_at beyond 2^53-1": {"issued_at": 2**53, "expires_at": 2**53 + 60},
}


@pytest.mark.parametrize("changes", INVALID_CHALLENGES.values(), ids=INVALID_CHALLENGES.keys())
def test_invalid_challenge_is_refused_at_signing_and_at_parsing(changes):
    challenge = make_challenge(**changes)
    assert code_of(sign_challenge, challenge, SERVER.signing_key) == "malformed"
    assert code_of(parse, raw_token(challenge.to_json())) == "malformed"


VALID_EDGES = {
    "lifetime 120 s": {"expires_at": NOW - 5 + 120},
    "lifetime 1 s": {"expires_at": NOW - 4},
    "id 16 bytes": {"id": b"\x02" * 16},
    "id 64 bytes": {"id": b"\x02" * 64},
    "16 origins": {"origins": tuple(f"https://{i}.example" for i in range(16))},
    "no origins": {"origins": ()},
    "binding 256 chars": {"binding": "b" * 256},
    "empty binding": {"binding": ""},
    "kid 64 chars": {"kid": "k" * 64},
    "empty kid": {"kid": ""},
    "issued_at 0": {"issued_at": 0, "expires_at": 60},
    "with data": {"data": {"checks": ["a", "b"]}},
}


@pytest.mark.parametrize("changes", VALID_EDGES.values(), ids=VALID_EDGES.keys())
def test_challenge_edges_round_trip(changes):
    challenge = make_challenge(**changes)
    assert parse(sign_challenge(challenge, SERVER.signing_key)) == challenge


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_purpose_round_trips(purpose):
    challenge = make_challenge(purpose=purpose)
    assert parse(sign_challenge(challenge, SERVER.signing_key)).purpose == purpose


def test_signer_refuses_what_the_parser_would_refuse():
    # A float, bool or non-str value would make a token that no verifier reads.
    for changes in (
        {"issued_at": float(NOW - 5)},
        {"expires_at": True},
        {"kid": 7},
        {"data": ["not", "an", "object"]},
        {"binding": None},
    ):
        assert code_of(sign_challenge, make_challenge(**changes), SERVER.signing_key) == (
            "malformed"
        ), changes


def test_version_other_than_1_is_unsupported_at_signing_and_parsing():
    challenge = make_challenge(version=2)
    assert code_of(sign_challenge, challenge, SERVER.signing_key) == "unsupported_version"
    assert code_of(parse, raw_token(challenge.to_json())) == "unsupported_version"


def test_version_is_checked_before_other_fields():
    assert code_of(parse, raw_token({"v": 2})) == "unsupported_version"
    assert code_of(parse, raw_token({"v": 1})) == "malformed"


@pytest.mark.parametrize(
    "field, value",
    [
        ("v", True),
        ("issued_at", True),
        ("expires_at", float(NOW + 55)),
        ("issued_at", "1767225600"),
        ("origins", "https://idp.example.com"),
        ("origins", [1]),
        ("id", 5),
        ("data", []),
        ("kid", None),
    ],
)
def test_challenge_field_types(field, value):
    payload = make_challenge().to_json()
    payload[field] = value
    assert code_of(parse, raw_token(payload)) == "malformed"


@pytest.mark.parametrize("field", ["id", "purpose", "issued_at", "callback", "binding", "kid"])
def test_challenge_required_fields(field):
    payload = make_challenge().to_json()
    del payload[field]
    assert code_of(parse, raw_token(payload)) == "malformed"


def test_challenge_token_shape():
    token = sign_challenge(make_challenge(), SERVER.signing_key)
    payload, signature = token.split(".")
    assert code_of(parse, payload) == "malformed"
    assert code_of(parse, token + ".x") == "malformed"
    assert code_of(parse, payload + "." + signature[:-2]) == "malformed"  # 63-byte signature
    assert code_of(parse, payload + "=." + signature) == "malformed"
    assert code_of(parse, None) == "malformed"
    assert code_of(parse, token.encode()) == "malformed"


def test_challenge_signature_checks():
    challenge = make_challenge()
    assert code_of(parse, sign_challenge(challenge, OTHER.signing_key)) == (
        "bad_challenge_signature"
    )
    # The context prefix is part of what is signed.
    payload = dumps(challenge.to_json())
    bare = SERVER.signing_key.sign(payload).signature
    assert code_of(parse, f"{b64e(payload)}.{b64e(bare)}") == "bad_challenge_signature"
    # The signature is checked before the payload is parsed.
    junk = b"\xff not json"
    signature = OTHER.signing_key.sign(CHALLENGE_CONTEXT + junk).signature
    assert code_of(parse, f"{b64e(junk)}.{b64e(signature)}") == "bad_challenge_signature"


def test_signed_payload_must_be_a_utf8_json_object():
    assert code_of(parse, raw_token(b"\xff\xfe")) == "malformed"
    assert code_of(parse, raw_token([1, 2])) == "malformed"
    assert code_of(parse, raw_token(b'{"v":1,"v":1}')) == "malformed"


def test_challenge_token_size_cap():
    filler = {"f": "x" * 6000}
    big = sign_challenge(make_challenge(data=filler), SERVER.signing_key)
    assert len(big) > MAX_TOKEN_SIZE
    assert code_of(parse, big) == "too_large"
    fits = sign_challenge(make_challenge(data={"f": "x" * 5000}), SERVER.signing_key)
    assert len(fits) <= MAX_TOKEN_SIZE
    assert parse(fits).data == {"f": "x" * 5000}


def test_challenge_canonical_payload():
    token = sign_challenge(make_challenge(), SERVER.signing_key)
    payload = b64d(token.split(".")[0])
    obj = json.loads(payload)
    assert list(obj) == sorted(obj)
    assert b" " not in payload and "data" not in obj  # empty data is left out
    assert obj["v"] == PROTOCOL_VERSION == 1


def test_key_id():
    raw = bytes(SERVER.verify_key)
    assert key_id(raw) == b64e(hashlib.sha256(raw).digest()[:8])
    assert key_id(SERVER.verify_key) == SERVER.kid
    assert len(SERVER.kid) == 11 and SERVER.kid != OTHER.kid


# -- encoding --------------------------------------------------------------------------------


def test_base64url_lengths_and_types():
    assert b64d("AAAA", length=3) == b"\x00\x00\x00"
    assert code_of(b64d, "AAAA", length=2) == "malformed"
    assert code_of(b64d, b"AAAA") == "malformed"
    assert code_of(b64d, None) == "malformed"
    assert b64d("") == b""


@pytest.mark.parametrize("text", ["AA==", "AB", "AAB", "A", "AA+A", "AA/A", "AA A", "AAA\n", "é"])
def test_base64url_refusals(text):
    assert code_of(b64d, text) == "malformed"


def test_json_size_cap_counts_bytes():
    assert loads(b'"abc"', max_size=5) == "abc"
    assert code_of(loads, b'"abcd"', max_size=5) == "too_large"
    text = '"' + "é" * 3 + '"'  # 5 characters, 8 UTF-8 bytes
    assert loads(text, max_size=8) == "é" * 3
    assert code_of(loads, text, max_size=7) == "too_large"


def _nested(depth: int, kind: str) -> str:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    inner = "[]" if kind == "list" else "{}"
    return opening * (depth - 1) + inner + closing * (depth - 1)


@pytest.mark.parametrize("kind", ["list", "object"])
def test_json_depth_cap(kind):
    assert loads(_nested(16, kind), max_size=1000) is not None
    assert code_of(loads, _nested(17, kind), max_size=1000) == "malformed"
    assert code_of(loads, "[" * 100_000 + "]" * 100_000, max_size=10**6) == "malformed"


def test_json_many_containers_at_low_depth_are_fine():
    # Reports carry many rows; only depth is limited, not the number of containers.
    rows = [{"name": "{[{[", "value": [1, 2]} for _ in range(5000)]
    text = json.dumps(rows)
    assert loads(text, max_size=len(text)) == rows


def test_json_duplicate_keys_anywhere():
    assert code_of(loads, '{"a":1,"a":1}', max_size=100) == "malformed"
    assert code_of(loads, '{"x":[{"b":1,"b":2}]}', max_size=100) == "malformed"
    assert loads('{"a":1,"A":1}', max_size=100) == {"a": 1, "A": 1}


@pytest.mark.parametrize(
    "text", ["NaN", "Infinity", "-Infinity", "[1e999]", '{"a":-1E400}', "1e309"]
)
def test_json_non_finite_numbers(text):
    assert code_of(loads, text, max_size=100) == "malformed"


def test_json_large_finite_numbers_are_kept():
    assert loads("1e308", max_size=100) == 1e308
    assert loads(str(2**64), max_size=100) == 2**64


@pytest.mark.parametrize(
    "text",
    [r'"\ud800"', r'"a\udfffb"', r'{"\udc00":1}', r'"\ude00\ud83d"', b'"\xed\xa0\x80"'],
)
def test_json_lone_surrogates(text):
    assert code_of(loads, text, max_size=100) == "malformed"


def test_json_surrogate_pairs_are_fine():
    assert loads(r'"\ud83d\ude00"', max_size=100) == "\U0001f600"


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\xef\xbb\xbf{}", b"{'a':1}", b"{}x", b"", b"[1,]", b"01", b'"\x01"', None, 5],
)
def test_json_refusals(data):
    assert code_of(loads, data, max_size=100) == "malformed"


def test_json_text_with_lone_surrogate_character():
    assert code_of(loads, '"\ud800"', max_size=100) == "malformed"


def test_require_bool_is_not_a_number():
    assert code_of(require, {"v": True}, "v", int) == "malformed"
    assert code_of(require, {"v": False}, "v", (int, float)) == "malformed"
    assert require({"v": 1}, "v", int) == 1
    assert require({"v": 1.5}, "v", (int, float)) == 1.5
    assert require({"v": True}, "v", bool) is True
    assert require({"v": True}, "v", (bool, str)) is True  # bool named among several kinds
    assert code_of(require, {"v": 1.0}, "v", int) == "malformed"
    assert code_of(require, {}, "v", int) == "malformed"
    assert code_of(require, [], "v", int) == "malformed"


def test_canonical_dumps():
    assert dumps({"b": 1, "a": [1, "é"], "c": {"z": None, "y": True}}) == (
        '{"a":[1,"é"],"b":1,"c":{"y":true,"z":null}}'.encode()
    )


# -- keys -----------------------------------------------------------------------------------


def test_hkdf_matches_the_specified_derivation():
    cid = b"\x07" * 16
    expected = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"devicetrust/v1",
        info=b"devicetrust/v1/challenge-box\x00" + cid,
    ).derive(b"\x22" * 32)
    assert HKDF_SALT == b"devicetrust/v1"
    assert HKDF_INFO_PREFIX == b"devicetrust/v1/challenge-box\x00"
    assert bytes(SERVER.challenge_box_key(cid)) == expected


def test_hkdf_is_deterministic_and_separates_ids_and_secrets():
    cid = b"\x07" * 16
    again = ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 32)
    assert bytes(SERVER.challenge_box_key(cid)) == bytes(again.challenge_box_key(cid))
    keys = {
        bytes(SERVER.challenge_box_key(cid)),
        bytes(SERVER.challenge_box_key(b"\x08" + cid[1:])),
        bytes(SERVER.challenge_box_key(cid + b"\x00")),  # the id is not padded or truncated
        bytes(OTHER.challenge_box_key(cid)),
        bytes(ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 33).challenge_box_key(cid)),
    }
    assert len(keys) == 5


def test_per_challenge_box_key_opens_what_is_sealed_to_its_public_half():
    cid = b"\x09" * 16
    private = SERVER.challenge_box_key(cid)
    eph = PrivateKey.generate()
    sealed = Box(eph, private.public_key).encrypt(b"hello")
    assert Box(SERVER.challenge_box_key(cid), eph.public_key).decrypt(sealed) == b"hello"


def test_box_secret_must_have_32_bytes():
    with pytest.raises(ValueError):
        ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 31)
    assert ServerKeys.from_seeds(b"\x11" * 32, b"\x22" * 64).box_secret == b"\x22" * 64


def test_fingerprints():
    prints = DEVICE.fingerprints()
    assert prints["sign_key"] == (
        "SHA256:" + b64e(hashlib.sha256(bytes(SigningKey(b"\x55" * 32).verify_key)).digest())
    )
    assert prints["box_key"] == fingerprint(bytes(PrivateKey(b"\x66" * 32).public_key))
    for value in prints.values():
        assert re.fullmatch(r"SHA256:[A-Za-z0-9_-]{43}", value)
    assert prints["sign_key"] != prints["box_key"]


def test_device_keys():
    again = DeviceKeys.from_seeds("device-1", b"\x55" * 32, b"\x66" * 32)
    assert again.public_json() == DEVICE.public_json()
    assert DEVICE.public_json() == {
        "id": "device-1",
        "sign_key": b64e(DEVICE.sign_public),
        "box_key": b64e(DEVICE.box_public),
    }
    a, b = DeviceKeys.generate("x"), DeviceKeys.generate("x")
    assert a.sign_public != b.sign_public and a.box_public != b.box_public


# -- responses: each check of open_response ---------------------------------------------------


def token_and_challenge(**changes) -> tuple[str, Challenge]:
    challenge = make_challenge(**changes)
    return sign_challenge(challenge, SERVER.signing_key), challenge


TOKEN, CHALLENGE = token_and_challenge()


def body_json(**changes) -> dict:
    body = ResponseBody(
        challenge_token=TOKEN,
        device=DEVICE.public_json(),
        platform={"hardware_uuid": "u", "serial": "s", "os": "linux"},
        agent_version="0.1.0",
        agent_clock=NOW + 1.5,
    ).to_json()
    body.update(changes)
    return body


def envelope_for(
    body: dict | bytes,
    *,
    challenge: Challenge = CHALLENGE,
    signer: SigningKey = DEVICE.signing_key,
    **envelope_changes,
) -> bytes:
    raw = body if isinstance(body, bytes) else dumps(body)
    signature = signer.sign(RESPONSE_CONTEXT + raw).signature
    eph = PrivateKey(b"\x77" * 32)
    sealed = Box(eph, PublicKey(challenge.box_key)).encrypt(signature + raw, b"\x00" * 24)
    env = {
        "v": 1,
        "cid": b64e(challenge.id),
        "epk": b64e(bytes(eph.public_key)),
        "box": b64e(bytes(sealed)),
    }
    env.update(envelope_changes)
    return dumps(env)


def verify(envelope: bytes | str, **kwargs):
    options = {
        "verify_key": SERVER.verify_key,
        "box_key_for": SERVER.challenge_box_key,
        "now": NOW,
        "purposes": ("authenticate",),
    }
    options.update(kwargs)
    return open_response(envelope, **options)


def test_valid_response_content():
    result = verify(envelope_for(body_json(data={"k": [1]})))
    assert result.challenge == CHALLENGE
    assert result.device_id == "device-1"
    assert result.sign_key == DEVICE.sign_public and result.box_key == DEVICE.box_public
    assert result.platform == {"hardware_uuid": "u", "serial": "s", "os": "linux"}
    assert result.agent_version == "0.1.0"
    assert result.agent_clock == NOW + 1.5 and result.clock_skew == 1.5
    assert result.data == {"k": [1]}


def test_seal_response_is_what_open_response_reads():
    body = ResponseBody(TOKEN, DEVICE.public_json(), {}, "0.1.0", NOW, {"x": "y"})
    first, second = seal_response(body, CHALLENGE, DEVICE), seal_response(body, CHALLENGE, DEVICE)
    assert first != second  # a fresh ephemeral key and nonce each time
    assert verify(first) == verify(second)
    assert verify(first).data == {"x": "y"}


def test_envelope_size_cap():
    envelope = envelope_for(body_json())
    assert verify(envelope, max_size=len(envelope)).device_id == "device-1"
    assert code_of(verify, envelope, max_size=len(envelope) - 1) == "too_large"


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"v": 2}, "unsupported_version"),
        ({"v": True}, "malformed"),
        ({"v": "1"}, "malformed"),
        ({"cid": b64e(b"\x01" * 15)}, "malformed"),
        ({"cid": b64e(b"\x01" * 65)}, "malformed"),
        ({"epk": b64e(b"\x01" * 31)}, "malformed"),
        ({"box": b64e(b"\x01" * 103)}, "malformed"),
        ({"box": b64e(b"\x01" * 104)}, "box_open_failed"),
        ({"cid": None}, "malformed"),
    ],
)
def test_envelope_checks(changes, code):
    assert code_of(verify, envelope_for(body_json(), **changes)) == code


@pytest.mark.parametrize("field", ["v", "cid", "epk", "box"])
def test_envelope_required_fields(field):
    env = json.loads(envelope_for(body_json()))
    del env[field]
    assert code_of(verify, dumps(env)) == "malformed"


def test_unknown_envelope_and_body_fields_are_ignored():
    env = json.loads(envelope_for(body_json(extra="signed but unknown")))
    env["comment"] = "not signed, not read"
    assert verify(dumps(env)).device_id == "device-1"


def test_box_key_for_receives_the_cid():
    seen = []

    def box_key_for(cid: bytes) -> PrivateKey:
        seen.append(cid)
        return SERVER.challenge_box_key(cid)

    verify(envelope_for(body_json()), box_key_for=box_key_for)
    assert seen == [CHALLENGE.id]


def test_empty_body_inside_a_valid_box():
    assert code_of(verify, envelope_for(b"")) == "malformed"


@pytest.mark.parametrize(
    "changes, code",
    [
        ({"v": 2}, "unsupported_version"),
        ({"v": True}, "malformed"),
        ({"challenge": 5}, "malformed"),
        ({"device": {"id": "", "sign_key": "", "box_key": ""}}, "malformed"),
        ({"device": {**DEVICE.public_json(), "id": ""}}, "malformed"),
        ({"device": {**DEVICE.public_json(), "id": "d" * 65}}, "malformed"),
        ({"device": {**DEVICE.public_json(), "box_key": b64e(b"\x00" * 33)}}, "malformed"),
        ({"agent": {"version": "v" * 257, "clock": NOW}}, "malformed"),
        ({"agent": {"version": "1", "clock": True}}, "malformed"),
        ({"agent": {"version": "1", "clock": "1767225605"}}, "malformed"),
        ({"agent": {"version": "1", "clock": 10**400}}, "malformed"),
        ({"agent": {"version": 1, "clock": NOW}}, "malformed"),
        ({"platform": {str(i): "x" for i in range(33)}}, "malformed"),
        ({"platform": {"serial": 5}}, "malformed"),
        ({"platform": {"serial": "s" * 257}}, "malformed"),
        ({"platform": {"k" * 257: "s"}}, "malformed"),
        ({"platform": []}, "malformed"),
        ({"data": []}, "malformed"),
    ],
)
def test_body_checks(changes, code):
    assert code_of(verify, envelope_for(body_json(**changes))) == code


@pytest.mark.parametrize("field", ["v", "challenge", "device", "platform", "agent"])
def test_body_required_fields(field):
    body = body_json()
    del body[field]
    assert code_of(verify, envelope_for(body)) == "malformed"


def test_body_limits_that_pass():
    body = body_json(
        device={**DEVICE.public_json(), "id": "d" * 64},
        agent={"version": "v" * 256, "clock": NOW},
        platform={f"k{i}": "s" * 256 for i in range(32)},
    )
    result = verify(envelope_for(body))
    assert len(result.device_id) == 64 and len(result.agent_version) == 256
    assert len(result.platform) == 32
    del body["data"]
    assert verify(envelope_for(body)).data == {}


def test_device_signature_covers_context_and_exact_bytes():
    raw = dumps(body_json())
    assert code_of(verify, envelope_for(raw, signer=SigningKey(b"\x99" * 32))) == (
        "bad_device_signature"
    )
    # Re-serialised with whitespace: same JSON, other bytes, signature no longer matches.
    spaced = json.dumps(json.loads(raw), sort_keys=True).encode()
    signature = DEVICE.signing_key.sign(RESPONSE_CONTEXT + raw).signature
    eph = PrivateKey(b"\x77" * 32)
    sealed = Box(eph, PublicKey(CHALLENGE.box_key)).encrypt(signature + spaced, b"\x00" * 24)
    env = dumps(
        {
            "v": 1,
            "cid": b64e(CHALLENGE.id),
            "epk": b64e(bytes(eph.public_key)),
            "box": b64e(bytes(sealed)),
        }
    )
    assert code_of(verify, env) == "bad_device_signature"


def test_expiry_boundary():
    envelope = envelope_for(body_json(agent={"version": "1", "clock": CHALLENGE.expires_at}))
    assert verify(envelope, now=CHALLENGE.expires_at - 0.001).device_id == "device-1"
    assert code_of(verify, envelope, now=CHALLENGE.expires_at) == "challenge_expired"


def test_clock_skew_bound_is_configurable_and_recorded():
    envelope = envelope_for(body_json(agent={"version": "1", "clock": NOW - 90}))
    assert verify(envelope).clock_skew == -90
    assert verify(envelope, max_skew=90).clock_skew == -90
    assert code_of(verify, envelope, max_skew=89.9) == "clock_skew"


def test_check_order():
    # A wrong device signature is reported before expiry; expiry before clock skew.
    expired = CHALLENGE.expires_at + 10
    bad_sig = envelope_for(body_json(), signer=SigningKey(b"\x99" * 32))
    assert code_of(verify, bad_sig, now=expired) == "bad_device_signature"
    assert code_of(verify, envelope_for(body_json()), now=expired + 1000) == "challenge_expired"
    # Purpose before the device signature.
    assert code_of(verify, bad_sig, purposes=("register",)) == "wrong_purpose"
    # The envelope version before the box.
    assert code_of(verify, envelope_for(body_json(), v=2, box="AAAA")) == "unsupported_version"


def test_wrong_purpose():
    token, challenge = token_and_challenge(purpose="register", id=b"\x05" * 16)
    envelope = envelope_for(body_json(challenge=token), challenge=challenge)
    assert code_of(verify, envelope) == "wrong_purpose"
    assert verify(envelope, purposes=("register",)).challenge.purpose == "register"
    assert code_of(verify, envelope, purposes=()) == "wrong_purpose"


def test_low_order_ephemeral_key():
    assert code_of(verify, envelope_for(body_json(), epk=b64e(bytes(32)))) == "box_open_failed"


# -- registry and binding judgments ----------------------------------------------------------

VERIFIED = verify(envelope_for(body_json()))


def record(**changes) -> RegisteredDevice:
    fields = {"device_id": "device-1", "sign_key": DEVICE.sign_public, "state": "trusted"}
    fields.update(changes)
    return RegisteredDevice(**fields)


@pytest.mark.parametrize(
    "device, code",
    [
        (None, "device_unknown"),
        (record(device_id="device-2"), "device_unknown"),
        (record(sign_key=b"\x00" * 32), "device_key_mismatch"),
        (record(state="revoked"), "device_revoked"),
        (record(state="denied"), "device_denied"),
        (record(state="pending"), "device_pending"),
        (record(state="quarantined"), "device_unknown"),
        (record(owner_active=False), "owner_inactive"),
        (record(state="pending", owner_active=False), "device_pending"),
        (record(sign_key=b"\x00" * 32, state="revoked"), "device_key_mismatch"),
    ],
)
def test_check_registration(device, code):
    assert code_of(check_registration, VERIFIED, device) == code


def test_trusted_device_of_active_owner_passes():
    assert check_registration(VERIFIED, record()) is None


def test_check_binding():
    assert check_binding(VERIFIED, "login:t1") is None
    for other in ("login:t2", "login:t", "login:t1 ", "", "LOGIN:T1"):
        assert code_of(check_binding, VERIFIED, other) == "binding_mismatch"
    long_binding = replace(VERIFIED, challenge=replace(CHALLENGE, binding="é" * 10))
    assert check_binding(long_binding, "é" * 10) is None


# -- errors and ports -------------------------------------------------------------------------


def test_protocol_error_codes_are_closed():
    with pytest.raises(ValueError):
        ProtocolError("no_such_code")
    error = ProtocolError("clock_skew")
    assert error.code == "clock_skew" and error.detail == CODES["clock_skew"]
    assert ProtocolError("malformed", "why").detail == "why"


def test_ports():
    assert parse_ports(None) == DEFAULT_AGENT_PORTS
    assert parse_ports("  ") == DEFAULT_AGENT_PORTS
    assert parse_ports("1, 2 3") == (1, 2, 3)
    for bad in ("0", "65536", "x", "1,-2"):
        with pytest.raises(ValueError):
            parse_ports(bad)


# -- the specification agrees with the code ---------------------------------------------------


def test_every_code_is_specified_with_its_http_status():
    from idp_service.web.errors import PROTOCOL_STATUS

    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## 8. Rejection codes\n", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \| (.+?) \|", section, flags=re.M)
    rows = {code: (status, meaning) for code, status, meaning in table}
    assert len(rows) == len(re.findall(r"^\| `", section, flags=re.M))  # no row missed
    assert set(rows) == set(CODES)
    for code, (status, meaning) in rows.items():
        assert int(status) == PROTOCOL_STATUS.get(code, 400), code
        assert meaning == CODES[code], code


def test_specified_constants_and_ports():
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "devicetrust/v1/challenge\\x00",
        "devicetrust/v1/response\\x00",
        "devicetrust/v1/challenge-box\\x00",
        '"devicetrust/v1"',
    ):
        assert needle in text, needle
    for port in DEFAULT_AGENT_PORTS:
        assert str(port) in text
