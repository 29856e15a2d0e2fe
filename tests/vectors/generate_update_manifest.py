"""Rebuild ``tests/vectors/update_manifest_v1.json``, the update-manifest test vectors.

Usage (from the repository root)::

    python tests/vectors/generate_update_manifest.py          # rewrite the file
    python tests/vectors/generate_update_manifest.py --check  # exit 1 if it is out of date

Like ``generate.py``, this is a second, minimal implementation of the emitting
side of ``docs/protocol.md`` §15: libsodium through PyNaCl's low-level bindings,
``hashlib`` and the standard ``json`` module, and nothing from ``trust_protocol``.
The signature context, the bucket rule and every bound are spelled out here
again, so a change in the implementation that alters the format makes
``tests/test_update_manifest_vectors.py`` fail. Every verdict and decision is
stated by intent, never computed by running the verifier.

Fixed values are ``SHA-256("devicetrust/v1 test vectors/" + label)``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from nacl import bindings

OUT = Path(__file__).with_name("update_manifest_v1.json")

UPDATE_CONTEXT = b"devicetrust/v1/update-manifest\x00"
BUCKET_CONTEXT = b"devicetrust/v1/update-bucket\x00"
CHALLENGE_CONTEXT = b"devicetrust/v1/challenge\x00"
MAX_DOCUMENT = 32 * 1024
MAX_PAYLOAD = 16 * 1024
MAX_LIFETIME = 366 * 86400

T0 = 1767225600  # 2026-01-01T00:00:00Z
ISSUED_AT = T0
EXPIRES_AT = T0 + 30 * 86400
NOW = T0 + 3600
SERIAL = 1767225600
PLATFORM = "linux-x86_64"
DEVICE = "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"  # the laptop of v1.json
DROP = object()


def seed(label: str, size: int = 32) -> bytes:
    """A fixed pseudo-random value named by ``label``."""
    return hashlib.sha256(b"devicetrust/v1 test vectors/" + label.encode()).digest()[:size]


def b64e(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 without \\u escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bucket(device_id: str) -> int:
    """SHA-256(BUCKET_CONTEXT || device id), first 8 bytes big-endian, mod 100."""
    return int.from_bytes(hashlib.sha256(BUCKET_CONTEXT + device_id.encode()).digest()[:8]) % 100


class Key:
    """An update signing key from a fixed seed."""

    def __init__(self, name: str) -> None:
        self.seed = seed(f"{name}/update signing seed")
        self.public, self.secret = bindings.crypto_sign_seed_keypair(self.seed)
        self.kid = b64e(hashlib.sha256(self.public).digest()[:8])

    def sign(self, message: bytes) -> bytes:
        return bindings.crypto_sign(message, self.secret)[:64]

    def to_json(self) -> dict[str, str]:
        return {"seed": self.seed.hex(), "public": b64e(self.public), "kid": self.kid}


UPDATE = Key("update")
OTHER = Key("other update")
ARTIFACT = b"#!/bin/sh\necho devicetrust-agent 0.2.0\n"
ARTIFACT_SHA = hashlib.sha256(ARTIFACT).hexdigest()


def artifact(version: str = "0.2.0", **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": version,
        "url": f"https://updates.example.com/devicetrust-agent-{version}-linux-x86_64",
        "sha256": ARTIFACT_SHA,
        "size": len(ARTIFACT),
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


def fields(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "v": 1,
        "kid": UPDATE.kid,
        "serial": SERIAL,
        "issued_at": ISSUED_AT,
        "expires_at": EXPIRES_AT,
        "rollout": {"pinned": False, "percent": 100},
        "artifacts": {PLATFORM: artifact(), "linux-x86_64-deb": artifact(url=DEB_URL)},
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not DROP}


DEB_URL = "https://updates.example.com/devicetrust-agent_0.2.0_amd64.deb"


def document(payload: bytes, key: Key = UPDATE, context: bytes = UPDATE_CONTEXT) -> str:
    signature = key.sign(context + payload)
    return canonical({"manifest": b64e(payload), "signature": b64e(signature)}).decode()


def reject(code: str) -> dict[str, str]:
    return {"verdict": "reject", "code": code}


def two_devices() -> tuple[str, str, int]:
    """A device inside and one outside a stage, and the stage's percent."""
    inside, outside = DEVICE, "9a0e7c31-2d4b-4f8a-b6e5-71c3d9a2e4f6"
    b_in, b_out = bucket(inside), bucket(outside)
    if b_in > b_out:
        inside, outside, b_in, b_out = outside, inside, b_out, b_in
    assert b_in < b_out, "pick other ids: the buckets collide"
    return inside, outside, b_in + 1


def manifest_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        description: str,
        doc: str,
        expect: dict[str, Any],
        *,
        key: str = "update",
        now: int = NOW,
        last: dict[str, Any] | None = None,
        platform: str = PLATFORM,
        device_id: str = DEVICE,
        running: str = "0.1.0",
    ) -> None:
        out.append(
            {
                "name": name,
                "description": description,
                "document": doc,
                "key": key,
                "now": now,
                "last": last,
                "platform": platform,
                "device_id": device_id,
                "running": running,
                "expect": expect,
            }
        )

    def accepted(payload_fields: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        payload = canonical(payload_fields)
        return {
            "verdict": "accept",
            "manifest": payload_fields,
            "digest": hashlib.sha256(payload).hexdigest(),
            "decision": decision,
        }

    good = fields()
    good_doc = document(canonical(good))
    good_digest = hashlib.sha256(canonical(good)).hexdigest()
    upgrade = {"action": "install", "reason": "upgrade", "version": "0.2.0"}
    add("upgrade", "0.1.0 sees 0.2.0 for every device", good_doc, accepted(good, upgrade))
    add(
        "deb_platform",
        "A package-managed install picks its own entry",
        good_doc,
        accepted(good, upgrade),
        platform="linux-x86_64-deb",
    )
    add(
        "up_to_date",
        "The device already runs 0.2.0",
        good_doc,
        accepted(good, {"action": "none", "reason": "up_to_date", "version": "0.2.0"}),
        running="0.2.0",
    )
    add(
        "up_to_date_short_form",
        "0.2 and 0.2.0 are the same version",
        good_doc,
        accepted(good, {"action": "none", "reason": "up_to_date", "version": "0.2.0"}),
        running="0.2",
    )
    add(
        "downgrade_refused",
        "The device runs 0.10.0 (numbers compare as numbers); 0.2.0 is not pinned",
        good_doc,
        accepted(good, {"action": "none", "reason": "downgrade_refused", "version": "0.2.0"}),
        running="0.10.0",
    )
    pinned = fields(rollout={"pinned": True, "percent": 100})
    add(
        "pinned_downgrade",
        "A pinned 0.2.0 is installed over 0.3.0",
        document(canonical(pinned)),
        accepted(pinned, {"action": "install", "reason": "pinned", "version": "0.2.0"}),
        running="0.3.0",
    )
    add(
        "no_artifact",
        "No entry for macos-arm64",
        good_doc,
        accepted(good, {"action": "none", "reason": "no_artifact"}),
        platform="macos-arm64",
    )
    inside, outside, percent = two_devices()
    staged = fields(rollout={"pinned": False, "percent": percent})
    staged_doc = document(canonical(staged))
    add(
        "stage_inside",
        f"A {percent} % stage: this device's bucket is {bucket(inside)}",
        staged_doc,
        accepted(staged, upgrade),
        device_id=inside,
    )
    add(
        "stage_outside",
        f"A {percent} % stage: this device's bucket is {bucket(outside)}",
        staged_doc,
        accepted(staged, {"action": "none", "reason": "not_in_stage", "version": "0.2.0"}),
        device_id=outside,
    )
    halted = fields(rollout={"pinned": False, "percent": 0})
    add(
        "stage_zero",
        "0 %: nobody installs",
        document(canonical(halted)),
        accepted(halted, {"action": "none", "reason": "not_in_stage", "version": "0.2.0"}),
    )
    add(
        "same_manifest_again",
        "The serial and digest this device accepted last: still fine",
        good_doc,
        accepted(good, upgrade),
        last={"serial": SERIAL, "digest": good_digest},
    )
    add(
        "newer_serial",
        "The last accepted serial is lower",
        good_doc,
        accepted(good, upgrade),
        last={"serial": SERIAL - 1, "digest": "00" * 32},
    )
    # ---- refused ------------------------------------------------------------------------
    add(
        "other_key",
        "Signed by a key the device did not pin",
        document(canonical(good), OTHER),
        reject("bad_update_signature"),
    )
    add(
        "other_key_own_kid",
        "Signed by another key naming itself",
        document(canonical(fields(kid=OTHER.kid)), OTHER),
        reject("bad_update_signature"),
    )
    add(
        "challenge_context",
        "Signed by the update key under the challenge context",
        document(canonical(good), UPDATE, CHALLENGE_CONTEXT),
        reject("bad_update_signature"),
    )
    add(
        "other_kid",
        "Signed by the pinned key but naming another key id",
        document(canonical(fields(kid=OTHER.kid))),
        reject("bad_update_signature"),
    )
    tampered = canonical(fields(artifacts={PLATFORM: artifact(sha256="0" * 64)}))
    signature = UPDATE.sign(UPDATE_CONTEXT + canonical(good))
    add(
        "swapped_payload",
        "Another payload under the good manifest's signature",
        canonical({"manifest": b64e(tampered), "signature": b64e(signature)}).decode(),
        reject("bad_update_signature"),
    )
    add(
        "expired",
        "now is at expires_at",
        good_doc,
        reject("update_expired"),
        now=EXPIRES_AT,
    )
    add(
        "replayed",
        "The device already accepted serial + 1",
        good_doc,
        reject("update_replayed"),
        last={"serial": SERIAL + 1, "digest": "00" * 32},
    )
    add(
        "same_serial_other_content",
        "The serial this device accepted last, with other content",
        good_doc,
        reject("update_replayed"),
        last={"serial": SERIAL, "digest": "11" * 32},
    )
    spaced = json.dumps(good, sort_keys=True).encode()
    add("not_canonical", "Payload with spaces", document(spaced), reject("malformed"))
    add(
        "extra_field",
        "An unknown payload field",
        document(canonical(fields(channel="beta"))),
        reject("malformed"),
    )
    add(
        "missing_field",
        "No expires_at",
        document(canonical(fields(expires_at=DROP))),
        reject("malformed"),
    )
    add(
        "version_2",
        "v is 2",
        document(canonical(fields(v=2))),
        reject("unsupported_version"),
    )
    bad_entries = {
        "sha256_upper": ("Upper-case hex digest", artifact(sha256=ARTIFACT_SHA.upper())),
        "sha256_short": ("A 63-digit digest", artifact(sha256=ARTIFACT_SHA[:63])),
        "url_ftp": ("An ftp URL", artifact(url="ftp://updates.example.com/a")),
        "url_relative": ("A relative URL", artifact(url="/agent/v1/artifact")),
        "url_space": ("A URL with a space", artifact(url="https://updates.example.com/a b")),
        "size_zero": ("size 0", artifact(size=0)),
        "size_huge": ("size over 1 GiB", artifact(size=1024**3 + 1)),
        "size_float": ("size 40.0", artifact(size=40.0)),
        "version_leading_zero": ("version 0.02.0", artifact(version="0.02.0")),
        "version_suffix": ("version 0.2.0-beta", artifact(version="0.2.0-beta")),
        "version_five_parts": ("version 1.2.3.4.5", artifact(version="1.2.3.4.5")),
        "artifact_extra": ("An extra artifact field", artifact(signature="x")),
        "artifact_missing": ("No sha256", artifact(sha256=DROP)),
    }
    for name, (description, entry) in bad_entries.items():
        add(
            name,
            description,
            document(canonical(fields(artifacts={PLATFORM: entry}))),
            reject("malformed"),
        )
    for name, description, rollout in (
        ("percent_101", "percent 101", {"pinned": False, "percent": 101}),
        ("percent_negative", "percent -1", {"pinned": False, "percent": -1}),
        ("pinned_int", "pinned is 1, not true", {"pinned": 1, "percent": 100}),
        ("percent_bool", "percent is true", {"pinned": False, "percent": True}),
        ("rollout_extra", "rollout with a salt", {"pinned": False, "percent": 5, "salt": "x"}),
    ):
        add(name, description, document(canonical(fields(rollout=rollout))), reject("malformed"))
    add(
        "platform_upper",
        "Platform name Linux-x86_64",
        document(canonical(fields(artifacts={"Linux-x86_64": artifact()}))),
        reject("malformed"),
    )
    add(
        "no_platforms",
        "artifacts is empty",
        document(canonical(fields(artifacts={}))),
        reject("malformed"),
    )
    many = {f"linux-x{i}": artifact() for i in range(17)}
    add(
        "too_many_platforms",
        "17 platforms",
        document(canonical(fields(artifacts=many))),
        reject("malformed"),
    )
    add(
        "lifetime_too_long",
        "expires_at 366 days and one second after issued_at",
        document(canonical(fields(expires_at=ISSUED_AT + MAX_LIFETIME + 1))),
        reject("malformed"),
    )
    add(
        "serial_zero",
        "serial 0",
        document(canonical(fields(serial=0))),
        reject("malformed"),
    )
    dup = canonical(good)[:-1] + b',"v":1}'
    add("duplicate_key", "v appears twice", document(dup), reject("malformed"))
    doc = json.loads(good_doc)
    add(
        "document_extra",
        "The document has a third member",
        canonical({**doc, "kid": UPDATE.kid}).decode(),
        reject("malformed"),
    )
    add(
        "signature_short",
        "A 63-byte signature",
        canonical({**doc, "signature": b64e(bytes(63))}).decode(),
        reject("malformed"),
    )
    add(
        "padded_base64",
        "The payload base64url with padding",
        canonical({**doc, "manifest": doc["manifest"] + "=="}).decode(),
        reject("malformed"),
    )
    add(
        "too_large",
        "One byte over the document cap",
        good_doc + " " * (MAX_DOCUMENT + 1 - len(good_doc.encode())),
        reject("too_large"),
    )
    return out


def artifact_vectors() -> list[dict[str, Any]]:
    entry = artifact()
    flipped = bytearray(ARTIFACT)
    flipped[10] ^= 0x01
    return [
        {"name": "good", "bytes": ARTIFACT.hex(), "entry": entry, "expect": {"verdict": "accept"}},
        {
            "name": "one_bit_flipped",
            "bytes": bytes(flipped).hex(),
            "entry": entry,
            "expect": reject("update_digest_mismatch"),
        },
        {
            "name": "truncated",
            "bytes": ARTIFACT[:-1].hex(),
            "entry": entry,
            "expect": reject("update_digest_mismatch"),
        },
        {
            "name": "appended",
            "bytes": (ARTIFACT + b"\n").hex(),
            "entry": entry,
            "expect": reject("update_digest_mismatch"),
        },
    ]


def version_vectors() -> dict[str, Any]:
    pairs = [
        ("0.1.0", "0.2.0", -1),
        ("0.2.0", "0.2", 0),
        ("0.10.0", "0.9.9", 1),
        ("1.0.0.1", "1.0.0", 1),
        ("2", "10", -1),
    ]
    return {
        "order": [{"a": a, "b": b, "order": o} for a, b, o in pairs],
        "invalid": ["", "v1.0", "1..0", "01.0", "1.0.0.0.0", "1.0-rc1", " 1.0", "1.0\n"],
    }


def build() -> dict[str, Any]:
    """The whole vector file as a JSON-ready object."""
    inside, outside, _ = two_devices()
    return {
        "protocol": 1,
        "description": (
            "devicetrust update manifest v1 test vectors; see docs/protocol.md, section 15. "
            "Regenerate with: python tests/vectors/generate_update_manifest.py"
        ),
        "constants": {
            "update_context": UPDATE_CONTEXT.hex(),
            "bucket_context": BUCKET_CONTEXT.hex(),
            "max_document": MAX_DOCUMENT,
            "max_payload": MAX_PAYLOAD,
            "max_lifetime": MAX_LIFETIME,
        },
        "keys": {"update": UPDATE.to_json(), "other": OTHER.to_json()},
        "buckets": [{"device_id": d, "bucket": bucket(d)} for d in (inside, outside)],
        "versions": version_vectors(),
        "manifests": manifest_vectors(),
        "artifacts": artifact_vectors(),
    }


def render() -> str:
    """The exact text of update_manifest_v1.json."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUT} is out of date; run python tests/vectors/generate_update_manifest.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
