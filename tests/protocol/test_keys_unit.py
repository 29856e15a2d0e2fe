"""The server's and the device's key material, computed here a second way (§3 of the spec).

Written for the mutation runs over ``trust_protocol/server_keys.py`` and
``trust_protocol/device_keys.py``: each derivation is recomputed from the standard
library and ``cryptography`` directly, so a changed salt, length, info string, key half
or field name fails here and not only in a vector far away.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol.device_keys import DeviceKeys, fingerprint
from trust_protocol.server_keys import HKDF_INFO_PREFIX, HKDF_SALT, ServerKeys

SIGN_SEED = bytes(range(32))
BOX_SECRET = bytes(range(100, 132))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_the_box_secret_needs_at_least_32_bytes():
    with pytest.raises(ValueError, match=r"^box secret must be at least 32 bytes$"):
        ServerKeys.from_seeds(SIGN_SEED, b"\x01" * 31)
    assert ServerKeys.from_seeds(SIGN_SEED, b"\x01" * 32).box_secret == b"\x01" * 32
    assert ServerKeys.from_seeds(SIGN_SEED, b"\x01" * 64).box_secret == b"\x01" * 64


def test_server_keys_names_and_public_half():
    keys = ServerKeys.from_seeds(SIGN_SEED, BOX_SECRET)
    assert bytes(keys.signing_key) == SIGN_SEED
    assert bytes(keys.verify_key) == bytes(SigningKey(SIGN_SEED).verify_key)
    raw = bytes(keys.verify_key)
    assert keys.kid == _b64url(hashlib.sha256(raw).digest()[:8])
    assert HKDF_SALT == b"devicetrust/v1"
    assert HKDF_INFO_PREFIX == b"devicetrust/v1/challenge-box\x00"


def test_each_challenge_box_key_is_hkdf_of_the_secret_and_the_id():
    keys = ServerKeys.from_seeds(SIGN_SEED, BOX_SECRET)
    for challenge_id in (b"\x00" * 16, b"challenge-two---"):
        expect = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"devicetrust/v1",
            info=b"devicetrust/v1/challenge-box\x00" + challenge_id,
        ).derive(BOX_SECRET)
        assert keys.challenge_box_secret(challenge_id) == expect
        assert bytes(keys.challenge_box_key(challenge_id)) == expect
        assert keys.challenge_box_key(challenge_id).public_key == PrivateKey(expect).public_key
    assert keys.challenge_box_secret(b"a" * 16) != keys.challenge_box_secret(b"b" * 16)
    other = ServerKeys.from_seeds(SIGN_SEED, BOX_SECRET[::-1])
    assert other.challenge_box_secret(b"a" * 16) != keys.challenge_box_secret(b"a" * 16)


def test_fingerprint_is_sha256_in_unpadded_base64url():
    key = bytes(range(32))
    assert fingerprint(key) == "SHA256:" + _b64url(hashlib.sha256(key).digest())


def test_device_keys_from_seeds_and_their_public_halves():
    sign_seed, box_seed = b"\x05" * 32, b"\x06" * 32
    device = DeviceKeys.from_seeds("laptop-1", sign_seed, box_seed)
    sign_public = bytes(SigningKey(sign_seed).verify_key)
    box_public = bytes(PrivateKey(box_seed).public_key)
    assert device.device_id == "laptop-1"
    assert bytes(device.signing_key) == sign_seed
    assert bytes(device.box_key) == box_seed
    assert device.sign_public == sign_public
    assert device.box_public == box_public
    assert device.public_json() == {
        "id": "laptop-1",
        "sign_key": _b64url(sign_public),
        "box_key": _b64url(box_public),
    }
    assert device.fingerprints() == {
        "sign_key": fingerprint(sign_public),
        "box_key": fingerprint(box_public),
    }


def test_generated_device_keys_are_fresh_and_keep_the_id():
    one, two = DeviceKeys.generate("d-1"), DeviceKeys.generate("d-1")
    assert one.device_id == two.device_id == "d-1"
    assert one.sign_public != two.sign_public
    assert one.box_public != two.box_public
    assert one.sign_public != one.box_public


def test_the_report_box_key_is_hkdf_of_the_box_secret_under_its_own_info():
    from trust_protocol.report_keys import report_box_public, report_box_secret

    expect = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"devicetrust/v2",
        info=b"devicetrust/v2/report-box\x00",
    ).derive(BOX_SECRET)
    assert report_box_secret(BOX_SECRET) == expect
    assert report_box_public(BOX_SECRET) == bytes(PrivateKey(expect).public_key)
    assert report_box_secret(BOX_SECRET[::-1]) != expect
    # Not the box key of any challenge: its own info string separates the two.
    keys = ServerKeys.from_seeds(SIGN_SEED, BOX_SECRET)
    assert expect != keys.challenge_box_secret(b"")
