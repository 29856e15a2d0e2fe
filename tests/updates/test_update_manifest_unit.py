"""Bounds and branches of trust_protocol.update_manifest that the vectors do not reach.

Each bound is checked on both sides (the last value accepted, the first refused),
and each refusal by its code: the parser, the validators the signer runs, and the
rollout decision's edges.
"""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from nacl.signing import SigningKey

from trust_protocol import update_manifest as um
from trust_protocol.challenge import key_id
from trust_protocol.encoding import dumps
from trust_protocol.errors import ProtocolError

KEY = SigningKey(b"\x31" * 32)
KID = key_id(KEY.verify_key)
NOW = 1_767_225_600
SHA = "ab" * 32
ART = um.Artifact("0.2.0", "https://u.example.com/a", SHA, 10)


def manifest(**changes) -> um.Manifest:
    fields = {
        "kid": KID,
        "serial": 5,
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "artifacts": {"linux-x86_64": ART},
        "rollout": um.Rollout(),
    }
    fields.update(changes)
    return um.Manifest(**fields)


def code(fn, *args, **kwargs) -> str:
    with pytest.raises(ProtocolError) as exc:
        fn(*args, **kwargs)
    return exc.value.code


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def document(payload: bytes, key: SigningKey = KEY) -> bytes:
    signature = key.sign(um.UPDATE_CONTEXT + payload).signature
    return json.dumps({"manifest": b64(payload), "signature": b64(signature)}).encode()


def test_validate_bounds():
    ok = [
        manifest(kid="k" * 64),
        manifest(kid="k"),
        manifest(issued_at=0, expires_at=1),
        manifest(expires_at=NOW + um.MAX_LIFETIME),
        manifest(serial=1),
        manifest(serial=um.MAX_SERIAL),
        manifest(artifacts={f"p{i}": ART for i in range(um.MAX_PLATFORMS)}),
        manifest(artifacts={"p" * um.MAX_PLATFORM: ART}),
        manifest(rollout=um.Rollout(pinned=True, percent=0)),
        manifest(rollout=um.Rollout(pinned=False, percent=100)),
        manifest(artifacts={"x": dataclasses.replace(ART, size=1)}),
        manifest(artifacts={"x": dataclasses.replace(ART, size=um.MAX_ARTIFACT_SIZE)}),
    ]
    for m in ok:
        m.validate()
    bad = [
        manifest(kid=""),
        manifest(kid="k" * 65),
        manifest(kid=None),
        manifest(issued_at=-1),
        manifest(issued_at=-1, expires_at=30),
        manifest(expires_at=-1, issued_at=-61),
        manifest(issued_at=True),
        manifest(expires_at=NOW),
        manifest(expires_at=NOW + um.MAX_LIFETIME + 1),
        manifest(expires_at=NOW - 1),
        manifest(serial=0),
        manifest(serial=um.MAX_SERIAL + 1),
        manifest(rollout={"pinned": False, "percent": 100}),
        manifest(rollout=um.Rollout(pinned=1, percent=100)),
        manifest(rollout=um.Rollout(pinned=False, percent=101)),
        manifest(artifacts={}),
        manifest(artifacts=[ART]),
        manifest(artifacts={f"p{i}": ART for i in range(um.MAX_PLATFORMS + 1)}),
        manifest(artifacts={"p" * (um.MAX_PLATFORM + 1): ART}),
        manifest(artifacts={7: ART}),
        manifest(artifacts={"x": ART.to_json()}),
        manifest(artifacts={"x": dataclasses.replace(ART, size=0)}),
        manifest(artifacts={"x": dataclasses.replace(ART, size=um.MAX_ARTIFACT_SIZE + 1)}),
        manifest(artifacts={"x": dataclasses.replace(ART, url="ftp://u.example.com/a")}),
    ]
    for m in bad:
        assert code(m.validate) == "malformed", m


def test_urls():
    base = "https://u.example.com/"
    assert um.valid_url(base + "a" * (um.MAX_URL - len(base)))
    assert not um.valid_url(base + "a" * (um.MAX_URL - len(base) + 1))
    assert um.valid_url("http://u.example.com/a") and um.valid_url("https://h")
    for bad in ("", "h", None, b"https://u.example.com/", "https://", "https://[::1", "file:///x"):
        assert not um.valid_url(bad), bad


def test_versions_are_four_numbers():
    assert um.parse_version("1") == (1, 0, 0, 0)
    assert um.parse_version("1.2.3.4") == (1, 2, 3, 4)


def test_signing_refuses_another_kid_and_a_payload_over_the_cap():
    assert code(um.sign_manifest, manifest(kid="other"), KEY) == "malformed"
    url = "https://u.example.com/" + "a" * 2000
    big = {f"p{i}": dataclasses.replace(ART, url=url) for i in range(um.MAX_PLATFORMS)}
    assert code(um.sign_manifest, manifest(artifacts=big), KEY) == "too_large"


def test_a_payload_of_exactly_the_cap_is_signed():
    artifacts = {f"p{i}": dataclasses.replace(ART, url="https://u.example.com/") for i in range(9)}
    size = len(dumps(manifest(artifacts=artifacts).to_json()))
    fill, extra = divmod(um.MAX_PAYLOAD - size, 9)
    assert fill < um.MAX_URL - 30
    for i in range(9):
        pad = "a" * (fill + (extra if i == 0 else 0))
        artifacts[f"p{i}"] = dataclasses.replace(ART, url="https://u.example.com/" + pad)
    exact = manifest(artifacts=artifacts)
    assert len(dumps(exact.to_json())) == um.MAX_PAYLOAD
    signed = um.sign_manifest(exact, KEY)
    assert um.parse_manifest(signed.document(), KEY.verify_key).manifest == exact
    longer = dict(artifacts, p0=dataclasses.replace(ART, url=artifacts["p0"].url + "a"))
    assert code(um.sign_manifest, manifest(artifacts=longer), KEY) == "too_large"


def test_parser_payload_cap_and_shape():
    # A payload of exactly the cap passes the size check (and fails as JSON); one more is too large.
    assert code(um.parse_manifest, document(b" " * um.MAX_PAYLOAD), KEY.verify_key) == "malformed"
    assert code(um.parse_manifest, document(b" " * (um.MAX_PAYLOAD + 1)), KEY.verify_key) == (
        "too_large"
    )
    for payload in (b"[1]", b'"v"', b"1"):
        assert code(um.parse_manifest, document(payload), KEY.verify_key) == "malformed"
    fields = manifest().to_json()
    fields["rollout"] = [False, 100]
    assert code(um.parse_manifest, document(dumps(fields)), KEY.verify_key) == "malformed"
    fields["rollout"] = {"pinned": False, "percent": 100}
    fields["artifacts"] = {"x": [1]}
    assert code(um.parse_manifest, document(dumps(fields)), KEY.verify_key) == "malformed"


def test_parsed_manifest_keeps_the_exact_bytes():
    signed = um.sign_manifest(manifest(), KEY)
    parsed = um.parse_manifest(signed.document(), KEY.verify_key)
    assert (parsed.payload, parsed.signature) == (signed.payload, signed.signature)
    assert parsed.document() == signed.document()


def _device_in_bucket(wanted: int) -> str:
    for i in range(10_000):
        if um.bucket(f"device-{i}") == wanted:
            return f"device-{i}"
    raise AssertionError("no device id found")


@pytest.mark.parametrize("b", [0, 37, 99])
def test_stage_edges(b):
    device = _device_in_bucket(b)

    def action(percent: int) -> str:
        m = manifest(rollout=um.Rollout(percent=percent))
        return um.decide(m, platform="linux-x86_64", device_id=device, running="0.1.0").action

    assert action(b) == um.NOTHING  # the bucket must be below the percentage
    assert action(b + 1) == um.INSTALL


def test_decision_names_the_platform():
    m = manifest(rollout=um.Rollout(pinned=True, percent=0))
    for running, platform in (
        ("0.1.0", "macos-arm64"),
        ("0.2.0", "linux-x86_64"),
        ("0.1.0", "linux-x86_64"),
    ):
        assert um.decide(m, platform=platform, device_id="d", running=running).platform == platform
    m = manifest()
    for running in ("0.3.0", "0.1.0"):
        got = um.decide(m, platform="linux-x86_64", device_id="d", running=running)
        assert got.platform == "linux-x86_64"
    pinned = manifest(rollout=um.Rollout(pinned=True, percent=100))
    got = um.decide(pinned, platform="linux-x86_64", device_id="d", running="0.3.0")
    assert (got.action, got.reason, got.platform) == (um.INSTALL, "pinned", "linux-x86_64")
