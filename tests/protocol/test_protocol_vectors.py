"""Check trust_protocol against the published v1 test vectors (tests/vectors/v1.json).

Every expected byte (keys, HKDF outputs, challenge tokens, envelopes) must be
reproduced, and every verdict (accept with exact content, or the exact rejection
code) must match. The generator's output must equal the committed file, so the
vectors cannot drift from the code that claims to produce them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey

from agent.authenticate import Answer, Refusal, answer
from agent.state import Enrollment
from trust_protocol import challenge as challenge_mod
from trust_protocol import response as response_mod
from trust_protocol import server_keys
from trust_protocol.challenge import Challenge, parse_challenge, sign_challenge
from trust_protocol.device_keys import DeviceKeys, fingerprint
from trust_protocol.encoding import b64d, b64e
from trust_protocol.errors import CODES, ProtocolError
from trust_protocol.response import (
    RegisteredDevice,
    ResponseBody,
    VerifiedResponse,
    check_binding,
    check_registration,
    open_response,
    seal_response,
)
from trust_protocol.server_keys import ServerKeys

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_FILE = VECTOR_DIR / "v1.json"
V = json.loads(VECTOR_FILE.read_text(encoding="utf-8"))
KEYS = V["keys"]


def _server(name: str = "server") -> ServerKeys:
    k = KEYS[name]
    return ServerKeys.from_seeds(bytes.fromhex(k["sign_seed"]), bytes.fromhex(k["box_secret"]))


SERVER = _server()
DEVICES = {
    name: DeviceKeys.from_seeds(
        d["device_id"], bytes.fromhex(d["sign_seed"]), bytes.fromhex(d["box_secret"])
    )
    for name, d in KEYS["devices"].items()
}


def _load_generator():
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTOR_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(vectors):
    return [v["name"] for v in vectors]


# -- the file itself ----------------------------------------------------------------------


def test_generator_reproduces_the_committed_file():
    assert _load_generator().render() == VECTOR_FILE.read_text(encoding="utf-8")


def test_vector_names_are_unique():
    for section in ("challenges", "responses", "agent_checks", "notices", "polls"):
        names = _ids(V[section])
        assert len(names) == len(set(names)), section


def test_every_stateless_rejection_code_has_a_vector():
    # challenge_replayed needs the issuing server's database (the record of answers).
    stateful = {"challenge_replayed"}
    covered = {
        v["expect"]["code"]
        for section in ("responses", "notices", "polls")  # notices: test_notice_vectors.py
        for v in V[section]
        if v["expect"]["verdict"] == "reject"
    }
    # The update manifest's codes have their own file (test_update_manifest_vectors.py).
    updates = json.loads((VECTOR_DIR / "update_manifest_v1.json").read_text(encoding="utf-8"))
    covered |= {
        v["expect"]["code"]
        for section in ("manifests", "artifacts")
        for v in updates[section]
        if v["expect"]["verdict"] == "reject"
    }
    # Report v2's codes have their own file too (test_report_v2_vectors.py).
    reports = json.loads((VECTOR_DIR / "v2.json").read_text(encoding="utf-8"))
    covered |= {
        v["expect"]["code"]
        for section in ("reports", "acks")
        for v in reports[section]
        if v["expect"]["verdict"] == "reject"
    }
    # The re-authentication grants' codes have their own file too (test_reauth_vectors.py).
    reauth = json.loads((VECTOR_DIR / "reauth_v1.json").read_text(encoding="utf-8"))
    covered |= {v["expect"]["code"] for v in reauth["grants"] if v["expect"]["verdict"] == "reject"}
    assert covered == set(CODES) - stateful


def test_every_purpose_has_an_accept_vector():
    accepted = {
        p
        for v in V["responses"]
        if v["expect"]["verdict"] == "accept"
        for p in [v["expect"]["response"]["challenge"]["purpose"]]
    }
    assert accepted == {"register", "authenticate", "report"}


# -- constants and keys -------------------------------------------------------------------


def test_constants_match_the_implementation():
    c = V["constants"]
    assert bytes.fromhex(c["challenge_context"]) == challenge_mod.CHALLENGE_CONTEXT
    assert bytes.fromhex(c["response_context"]) == response_mod.RESPONSE_CONTEXT
    assert bytes.fromhex(c["hkdf_salt"]) == server_keys.HKDF_SALT
    assert bytes.fromhex(c["hkdf_info_prefix"]) == server_keys.HKDF_INFO_PREFIX
    assert c["max_lifetime"] == challenge_mod.MAX_LIFETIME


def test_agent_clock_tolerance_constant():
    from agent.authenticate import CLOCK_TOLERANCE

    assert V["constants"]["agent_clock_tolerance"] == CLOCK_TOLERANCE


@pytest.mark.parametrize("name", ["server", "other_server"])
def test_server_keys(name):
    keys = _server(name)
    assert b64e(bytes(keys.verify_key)) == KEYS[name]["sign_public"]
    assert keys.kid == KEYS[name]["kid"]


@pytest.mark.parametrize("name", sorted(KEYS["devices"]))
def test_device_keys(name):
    expected = KEYS["devices"][name]
    keys = DEVICES[name]
    assert b64e(keys.sign_public) == expected["sign_public"]
    assert b64e(keys.box_public) == expected["box_public"]
    assert keys.fingerprints() == expected["fingerprints"]
    assert fingerprint(keys.sign_public) == expected["fingerprints"]["sign_key"]


def test_ephemeral_key():
    eph = PrivateKey(bytes.fromhex(KEYS["ephemeral"]["secret"]))
    assert b64e(bytes(eph.public_key)) == KEYS["ephemeral"]["public"]


@pytest.mark.parametrize("vector", V["base64url"], ids=[v["text"] for v in V["base64url"]])
def test_base64url(vector):
    if "error" in vector:
        with pytest.raises(ProtocolError) as info:
            b64d(vector["text"])
        assert info.value.code == vector["error"]
    else:
        raw = bytes.fromhex(vector["bytes"])
        assert b64d(vector["text"]) == raw
        assert b64e(raw) == vector["text"]


@pytest.mark.parametrize("vector", V["box_keys"], ids=[v["challenge_id"] for v in V["box_keys"]])
def test_per_challenge_box_key(vector):
    keys = ServerKeys(SERVER.signing_key, bytes.fromhex(vector["box_secret"]))
    cid = b64d(vector["challenge_id"])
    assert bytes.fromhex(vector["info"]) == server_keys.HKDF_INFO_PREFIX + cid
    private = keys.challenge_box_key(cid)
    assert bytes(private).hex() == vector["private"]
    assert b64e(bytes(private.public_key)) == vector["public"]


# -- challenges ---------------------------------------------------------------------------


def _challenge_from_json(obj: dict) -> Challenge:
    return Challenge(
        id=b64d(obj["id"]),
        purpose=obj["purpose"],
        issued_at=obj["issued_at"],
        expires_at=obj["expires_at"],
        box_key=b64d(obj["box_key"]),
        origins=tuple(obj["origins"]),
        callback=obj["callback"],
        binding=obj["binding"],
        kid=obj["kid"],
        data=obj["data"],
        version=obj["v"],
    )


def _challenge_json(challenge: Challenge) -> dict:
    return {**challenge.to_json(), "data": challenge.data}


@pytest.mark.parametrize("vector", V["challenges"], ids=_ids(V["challenges"]))
def test_challenge_vector(vector):
    expect = vector["expect"]
    if expect["verdict"] == "reject":
        with pytest.raises(ProtocolError) as info:
            parse_challenge(vector["token"], SERVER.verify_key)
        assert info.value.code == expect["code"]
        return
    parsed = parse_challenge(vector["token"], SERVER.verify_key)
    assert _challenge_json(parsed) == expect["challenge"]
    # The signer reproduces the exact token and payload bytes.
    assert (
        sign_challenge(_challenge_from_json(expect["challenge"]), SERVER.signing_key)
        == (vector["token"])
    )
    assert b64d(vector["token"].split(".")[0]).decode() == expect["payload"]
    # The box key in the challenge is the one HKDF derives for its id.
    assert bytes(SERVER.challenge_box_key(parsed.id).public_key) == parsed.box_key


# -- responses ----------------------------------------------------------------------------


def _judge(vector: dict, *, as_text: bool = False) -> VerifiedResponse:
    """What a service does with the vector's envelope and inputs."""
    inputs = vector["inputs"]
    verified = open_response(
        vector["envelope"] if as_text else vector["envelope"].encode("utf-8"),
        verify_key=SERVER.verify_key,
        box_key_for=SERVER.challenge_box_key,
        now=inputs["now"],
        purposes=tuple(inputs["purposes"]),
        max_skew=inputs["max_skew"],
        max_size=inputs["max_size"],
    )
    if "expected_binding" in inputs:
        check_binding(verified, inputs["expected_binding"])
    if "registered_device" in inputs:
        record = inputs["registered_device"]
        check_registration(
            verified,
            None
            if record is None
            else RegisteredDevice(
                record["device_id"],
                b64d(record["sign_key"], length=32),
                record["state"],
                record["owner_active"],
            ),
        )
    return verified


def _content(verified: VerifiedResponse) -> dict:
    return {
        "challenge": _challenge_json(verified.challenge),
        "device": {
            "id": verified.device_id,
            "sign_key": b64e(verified.sign_key),
            "box_key": b64e(verified.box_key),
        },
        "platform": verified.platform,
        "agent": {"version": verified.agent_version, "clock": verified.agent_clock},
        "clock_skew": verified.clock_skew,
        "data": verified.data,
    }


@pytest.mark.parametrize("vector", V["responses"], ids=_ids(V["responses"]))
def test_response_verdict(vector):
    expect = vector["expect"]
    if expect["verdict"] == "reject":
        for as_text in (False, True):
            with pytest.raises(ProtocolError) as info:
                _judge(vector, as_text=as_text)
            assert info.value.code == expect["code"], info.value.detail
        return
    assert _content(_judge(vector)) == expect["response"]
    # Text input is read the same as bytes.
    assert _content(_judge(vector, as_text=True)) == expect["response"]


ACCEPTED_WITH_CONSTRUCTION = [
    v for v in V["responses"] if v["expect"]["verdict"] == "accept" and "construction" in v
]


@pytest.mark.parametrize("vector", ACCEPTED_WITH_CONSTRUCTION, ids=_ids(ACCEPTED_WITH_CONSTRUCTION))
def test_seal_reproduces_accepted_envelope(vector):
    built = vector["construction"]
    content = vector["expect"]["response"]
    device = next(
        keys for keys in DEVICES.values() if b64e(keys.sign_public) == content["device"]["sign_key"]
    )
    challenge = parse_challenge(built["challenge_token"], SERVER.verify_key)
    assert (
        b64e(bytes(SERVER.challenge_box_key(challenge.id).public_key)) == (built["box_recipient"])
    )
    body = ResponseBody(
        challenge_token=built["challenge_token"],
        device=device.public_json(),
        platform=content["platform"],
        agent_version=content["agent"]["version"],
        agent_clock=content["agent"]["clock"],
        data=content["data"],
    )
    envelope = seal_response(
        body,
        challenge,
        device,
        ephemeral_key=PrivateKey(bytes.fromhex(KEYS["ephemeral"]["secret"])),
        nonce=bytes.fromhex(KEYS["nonce"]),
    )
    assert envelope == vector["envelope"].encode()
    # The intermediate values are what they claim to be.
    body_bytes = built["body"].encode()
    signature = bytes.fromhex(built["device_signature"])
    VerifyKey(device.sign_public).verify(response_mod.RESPONSE_CONTEXT + body_bytes, signature)
    box = b64d(json.loads(vector["envelope"])["box"])
    assert box[:24].hex() == built["nonce"] == KEYS["nonce"]
    assert len(box) == 24 + 16 + 64 + len(body_bytes)


WITH_CONSTRUCTION = [v for v in V["responses"] if "construction" in v]


@pytest.mark.parametrize("vector", WITH_CONSTRUCTION, ids=_ids(WITH_CONSTRUCTION))
def test_construction_is_genuine(vector):
    """Each vector fails for its stated reason, not because the vector itself is broken.

    The body carries a genuine signature by the device it names exactly when the
    expected verdict is not ``bad_device_signature``; and the box opens with the
    key derived for the envelope's cid unless the verdict says it must not.
    """
    built = vector["construction"]
    body = bytes.fromhex(built["body_hex"]) if "body_hex" in built else built["body"].encode()
    signature = bytes.fromhex(built["device_signature"])
    named = [k for k in DEVICES.values() if b64e(k.sign_public).encode() in body]
    message = response_mod.RESPONSE_CONTEXT + body
    genuine = any(_verifies(k.sign_public, message, signature) for k in named)
    assert genuine == (vector["expect"].get("code") != "bad_device_signature")
    env = json.loads(vector["envelope"])
    try:
        cid, epk, sealed = b64d(env["cid"]), b64d(env["epk"], length=32), b64d(env["box"])
    except ProtocolError:
        assert vector["expect"]["code"] == "malformed"
        return
    try:
        opened = Box(SERVER.challenge_box_key(cid), PublicKey(epk)).decrypt(sealed)
    except CryptoError:
        opened = None
    if vector["expect"].get("code") == "box_open_failed" or len(sealed) < 104:
        assert opened is None
    else:
        assert opened == signature + body


def _verifies(public: bytes, message: bytes, signature: bytes) -> bool:
    from nacl.exceptions import BadSignatureError

    try:
        VerifyKey(public).verify(message, signature)
    except BadSignatureError:
        return False
    return True


# -- the agent's checks ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", V["agent_checks"], ids=_ids(V["agent_checks"]))
def test_agent_check(vector):
    inputs = vector["inputs"]
    enrollment = Enrollment(
        server_url=inputs["server_url"],
        server_key=inputs["pinned_server_key"],
        kid="",
        origins=[inputs["origin"]] if inputs["origin"] else [],
    )
    laptop = DEVICES["laptop"]

    def run() -> Answer:
        return answer(
            vector["token"],
            origin=inputs["origin"],
            enrollment=enrollment,
            keys=laptop,
            purposes=tuple(inputs["purposes"]),
            now=inputs["now"],
        )

    if vector["expect"]["verdict"] == "refuse":
        with pytest.raises(Refusal) as info:
            run()
        assert info.value.code == vector["expect"]["code"]
        return
    result = run()
    # The answer is a response the server accepts (judged at issue time, any skew).
    verified = open_response(
        result.envelope,
        verify_key=SERVER.verify_key,
        box_key_for=SERVER.challenge_box_key,
        now=result.challenge.issued_at,
        purposes=tuple(inputs["purposes"]),
        max_skew=10**6,
    )
    assert verified.device_id == laptop.device_id
    assert verified.agent_clock == inputs["now"]
