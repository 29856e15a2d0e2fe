"""Hypothesis properties of update manifests: what is signed round-trips; nothing else parses.

The manifest parser meets bytes from the network (the service, or anyone between
it and the agent), so: any bytes are refused with a protocol code and nothing
else; any change to a signed document's payload or signature is refused; a
manifest signed by another key is refused; a device's stage membership only
grows with the percentage.
"""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from trust_protocol import update_manifest as um
from trust_protocol.challenge import key_id
from trust_protocol.errors import ProtocolError

KEY = SigningKey(b"\x07" * 32)
OTHER = SigningKey(b"\x08" * 32)
KID = key_id(KEY.verify_key)
NOW = 1_767_225_600

numbers = st.integers(0, 999)
versions = st.lists(numbers, min_size=1, max_size=4).map(lambda ps: ".".join(map(str, ps)))
platforms = st.from_regex(r"\A[a-z0-9]{1,8}(-[a-z0-9_]{1,8}){0,3}\Z")
artifacts = st.builds(
    um.Artifact,
    version=versions,
    url=st.from_regex(r"\Ahttps://[a-z]{1,12}\.example\.com/[A-Za-z0-9._~/-]{0,40}\Z"),
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    size=st.integers(1, um.MAX_ARTIFACT_SIZE),
)
manifests = st.builds(
    um.Manifest,
    kid=st.just(KID),
    serial=st.integers(1, um.MAX_SERIAL),
    issued_at=st.integers(NOW - 86400, NOW),
    expires_at=st.integers(NOW + 1, NOW + 86400),
    rollout=st.builds(um.Rollout, pinned=st.booleans(), percent=st.integers(0, 100)),
    artifacts=st.dictionaries(platforms, artifacts, min_size=1, max_size=4),
)


@given(manifests)
def test_round_trip(manifest):
    signed = um.sign_manifest(manifest, KEY)
    parsed = um.parse_manifest(signed.document(), KEY.verify_key)
    assert parsed.manifest == manifest
    assert parsed.payload == signed.payload
    um.check_fresh(parsed, now=NOW, last_serial=manifest.serial, last_digest=signed.digest)


@settings(max_examples=300)
@given(st.binary(max_size=600) | st.text(max_size=600).map(str.encode))
def test_any_bytes_are_refused_with_a_code(data):
    try:
        um.parse_manifest(data, KEY.verify_key)
    except ProtocolError as exc:
        assert exc.code in {"malformed", "too_large", "bad_update_signature"}
    else:  # pragma: no cover - would need a forged signature
        raise AssertionError("random bytes parsed as a signed manifest")


@settings(max_examples=200)
@given(manifests, st.data())
def test_any_flipped_bit_is_refused(manifest, data):
    signed = um.sign_manifest(manifest, KEY)
    which = data.draw(st.sampled_from(["payload", "signature"]))
    raw = bytearray(signed.payload if which == "payload" else signed.signature)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    payload = bytes(raw) if which == "payload" else signed.payload
    signature = bytes(raw) if which == "signature" else signed.signature

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    doc = json.dumps({"manifest": b64(payload), "signature": b64(signature)}).encode()
    try:
        um.parse_manifest(doc, KEY.verify_key)
    except ProtocolError as exc:
        assert exc.code == "bad_update_signature"
    else:
        raise AssertionError("a tampered manifest parsed")


@given(manifests)
def test_other_key_is_refused(manifest):
    signed = um.sign_manifest(manifest, KEY)
    try:
        um.parse_manifest(signed.document(), OTHER.verify_key)
    except ProtocolError as exc:
        assert exc.code == "bad_update_signature"
    else:
        raise AssertionError("accepted under another key")


@given(manifests, st.integers(1, 10**6))
def test_older_serial_is_replay(manifest, ahead):
    signed = um.sign_manifest(manifest, KEY)
    try:
        um.check_fresh(signed, now=NOW, last_serial=manifest.serial + ahead)
    except ProtocolError as exc:
        assert exc.code == "update_replayed"
    else:
        raise AssertionError("an older serial passed")


@given(st.text(min_size=1, max_size=64), st.integers(0, 100), st.integers(0, 100))
def test_stages_only_grow(device_id, low, high):
    low, high = sorted((low, high))
    b = um.bucket(device_id)
    assert 0 <= b < 100
    if b < low:
        assert b < high


@given(versions, versions, st.booleans())
def test_never_a_downgrade_unless_pinned(running, offered, pinned):
    manifest = um.Manifest(
        kid=KID,
        serial=1,
        issued_at=NOW,
        expires_at=NOW + 1,
        rollout=um.Rollout(pinned=pinned, percent=100),
        artifacts={"linux-x86_64": um.Artifact(offered, "https://a.example.com/x", "0" * 64, 1)},
    )
    decision = um.decide(manifest, platform="linux-x86_64", device_id="d", running=running)
    order = um.compare_versions(offered, running)
    assert (decision.action == um.INSTALL) == (order > 0 or (order < 0 and pinned))
