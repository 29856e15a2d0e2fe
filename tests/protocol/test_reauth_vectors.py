"""Check trust_protocol's re-authentication grants and token hashes against the vectors (§17).

The generator (``tests/vectors/generate_reauth.py``) is an independent implementation.
Every accepted grant must open to exactly the stated fields, and the implementation
must reproduce its sealed bytes from the fixed ephemeral key and nonce; every
refused one must be refused with exactly the stated code; every token hash must
match.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from trust_protocol import reauth
from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d
from trust_protocol.errors import ProtocolError
from trust_protocol.reauth import Grant, open_grant, seal_grant, token_hash
from trust_protocol.server_keys import ServerKeys

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
V = json.loads((VECTOR_DIR / "reauth_v1.json").read_text(encoding="utf-8"))
KEYS = json.loads((VECTOR_DIR / "v1.json").read_text(encoding="utf-8"))["keys"]
SERVER = ServerKeys.from_seeds(
    bytes.fromhex(KEYS["server"]["sign_seed"]), bytes.fromhex(KEYS["server"]["box_secret"])
)
LAPTOP = DeviceKeys.from_seeds(
    KEYS["devices"]["laptop"]["device_id"],
    bytes.fromhex(KEYS["devices"]["laptop"]["sign_seed"]),
    bytes.fromhex(KEYS["devices"]["laptop"]["box_secret"]),
)


def test_constants_match():
    assert bytes.fromhex(V["constants"]["grant_context"]) == reauth.GRANT_CONTEXT
    assert bytes.fromhex(V["constants"]["hash_context"]) == reauth.HASH_CONTEXT


def test_the_file_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("reauth_gen", VECTOR_DIR / "generate_reauth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (VECTOR_DIR / "reauth_v1.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("vector", V["grants"], ids=lambda v: v["name"])
def test_grant_vector(vector):
    sealed = b64d(vector["sealed"])
    expect = vector["expect"]
    args = (sealed, LAPTOP.box_key, SERVER.verify_key, vector["device_id"])
    if expect["verdict"] == "accept":
        got = open_grant(*args, now=vector["now"])
        assert got.to_json() == expect["grant"]
        fields = {k: v for k, v in expect["grant"].items() if k not in ("v", "kind")}
        resealed = seal_grant(
            Grant(**fields),
            SERVER.signing_key,
            bytes(LAPTOP.box_key.public_key),
            ephemeral_key=PrivateKey(bytes.fromhex(V["ephemeral_secret"])),
            nonce=bytes.fromhex(V["nonce"]),
        )
        assert resealed == sealed
    else:
        with pytest.raises(ProtocolError) as exc:
            open_grant(*args, now=vector["now"])
        assert exc.value.code == expect["code"]


@pytest.mark.parametrize("vector", V["hashes"], ids=lambda v: v["name"])
def test_hash_vector(vector):
    got = token_hash(vector["token"], vector["device_id"], b64d(vector["sign_key"]))
    assert got == vector["hash"]


def test_a_presented_token_must_be_well_formed():
    assert reauth.presented({}) is None
    token = reauth.new_token()
    assert reauth.presented({"reauth": token}) == token
    for bad in (token[:-1], token + "A", 43, None, "!" * 43):
        with pytest.raises(ProtocolError):
            reauth.presented({"reauth": bad})


@given(st.binary(max_size=600))
def test_opening_arbitrary_bytes_only_refuses(blob):
    with pytest.raises(ProtocolError):
        open_grant(blob, LAPTOP.box_key, SERVER.verify_key, LAPTOP.device_id, now=0)


@given(st.integers(0, 2000), st.integers(0, 255))
def test_any_flipped_byte_of_a_good_grant_is_refused(index, flip):
    sealed = bytearray(b64d(V["grants"][0]["sealed"]))
    index %= len(sealed)
    if flip == 0:
        flip = 1
    sealed[index] ^= flip
    with pytest.raises(ProtocolError):
        open_grant(bytes(sealed), LAPTOP.box_key, SERVER.verify_key, LAPTOP.device_id, now=0)
