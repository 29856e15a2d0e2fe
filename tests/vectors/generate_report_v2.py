"""Rebuild ``tests/vectors/v2.json``, the report ceremony v2 test vectors, deterministically.

Usage (from the repository root)::

    python tests/vectors/generate_report_v2.py          # rewrite v2.json
    python tests/vectors/generate_report_v2.py --check  # exit 1 if v2.json is out of date

Like ``generate.py`` this is a second, minimal implementation of the emitting side of
``docs/protocol.md`` §16: libsodium through PyNaCl's low-level bindings, HKDF from
``cryptography``, SHA-256 from ``hashlib`` and the standard ``json`` module. It imports
nothing from ``trust_protocol``; every context and derivation is spelled out again here.
Every fixed value is ``SHA-256("devicetrust/v2 test vectors/" + label)``, and each
vector's verdict is stated by intent, never computed by running a verifier.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings

OUT = Path(__file__).with_name("v2.json")

REPORT_CONTEXT = b"devicetrust/v2/report\x00"
ACK_CONTEXT = b"devicetrust/v2/report-ack\x00"
REPORT_KEY_CONTEXT = b"devicetrust/v2/report-key\x00"
SECTION_PREFIX = b"devicetrust/v2/section\x00"
DOCUMENT_PREFIX = b"devicetrust/v2/document\x00"
HKDF_SALT = b"devicetrust/v2"
HKDF_INFO = b"devicetrust/v2/report-box\x00"

T0 = 1767225600  # 2026-01-01T00:00:00Z
NOW = T0 + 5
CLOCK = NOW + 0.25
MAX_SKEW = 300
DEVICE_ID = "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"
PLATFORM = {
    "hardware_uuid": "3c9a1f0e-52b7-4d6e-8a41-9b2c7e0d5f83",
    "instance": "00c0ffee00c0ffee",
    "os": "linux",
    "serial": "PF3XK2QA",
}


def seed(label: str, size: int = 32) -> bytes:
    """A fixed pseudo-random value named by ``label``."""
    return hashlib.sha256(b"devicetrust/v2 test vectors/" + label.encode()).digest()[:size]


def b64e(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 without \\u escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ed25519_public(sign_seed: bytes) -> bytes:
    """Ed25519 public key of a seed."""
    return bindings.crypto_sign_seed_keypair(sign_seed)[0]


def ed25519_sign(sign_seed: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature."""
    return bindings.crypto_sign(message, bindings.crypto_sign_seed_keypair(sign_seed)[1])[:64]


def section_digest(name: str, value: Any) -> str:
    """SHA-256(section prefix || name || NUL || canonical JSON), hex."""
    return hashlib.sha256(SECTION_PREFIX + name.encode() + b"\x00" + canonical(value)).hexdigest()


def document_digest(document: dict[str, Any]) -> str:
    """SHA-256(document prefix || for each sorted name: name || NUL || raw section digest)."""
    data = DOCUMENT_PREFIX
    for name in sorted(document):
        data += name.encode() + b"\x00" + bytes.fromhex(section_digest(name, document[name]))
    return hashlib.sha256(data).hexdigest()


SERVER_SIGN_SEED = seed("server sign seed")
SERVER_BOX_SECRET = seed("server box secret")
REPORT_SECRET = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(
    SERVER_BOX_SECRET
)
REPORT_PUBLIC = bindings.crypto_scalarmult_base(REPORT_SECRET)
LAPTOP_SEED = seed("laptop sign seed")
MALLORY_SEED = seed("mallory sign seed")
EPHEMERAL = seed("ephemeral secret")
NONCE = seed("nonce", 24)

ACKED = {
    "disk": {"encrypted": True},
    "firewall": {"enabled": True},
    "os": {"family": "linux", "version": "6.12.0"},
    "packages": {"installed": {"openssl": "3.0.15", "sudo": "1.9.15"}},
}
CHANGED = copy.deepcopy(ACKED)
CHANGED["firewall"] = {"enabled": False}
del CHANGED["disk"]
CHANGED["edr"] = {"running": True, "vendor": "example"}


def body(counter: int = 8, **fields: Any) -> dict[str, Any]:
    """A report body (before signing); ``fields`` add or replace members (None deletes)."""
    out: dict[str, Any] = {
        "v": 2,
        "device_id": DEVICE_ID,
        "counter": counter,
        "clock": CLOCK,
        "agent_version": "0.2.0",
        "platform": PLATFORM,
        "digest": document_digest(ACKED),
        "volatile": {"collected_at": "2026-01-01T00:00:05+00:00", "uptime_seconds": 3600},
    }
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def delta(document: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The delta members that bring ``base`` to ``document``."""
    changes = {
        name: {"digest": section_digest(name, value), "value": value}
        for name, value in document.items()
        if name not in base or section_digest(name, base[name]) != section_digest(name, value)
    }
    removed = sorted(name for name in base if name not in document)
    return {
        "base": document_digest(base),
        "changes": changes,
        "removed": removed,
        "digest": document_digest(document),
    }


def seal(
    fields: dict[str, Any],
    signer: bytes = LAPTOP_SEED,
    recipient: bytes | None = None,
    tamper: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The envelope text of a signed, boxed body, and how it was made."""
    body_bytes = canonical(fields)
    signature = ed25519_sign(signer, REPORT_CONTEXT + body_bytes)
    sealed = NONCE + bindings.crypto_box_easy(
        signature + body_bytes, NONCE, recipient or REPORT_PUBLIC, EPHEMERAL
    )
    if tamper:
        sealed = sealed[:30] + bytes([sealed[30] ^ 1]) + sealed[31:]
    envelope = canonical(
        {"v": 2, "epk": b64e(bindings.crypto_scalarmult_base(EPHEMERAL)), "box": b64e(sealed)}
    ).decode()
    construction = {"body": body_bytes.decode(), "device_signature": signature.hex()}
    return envelope, construction


def state(counter: int = 7, held: dict[str, Any] | None = ACKED, key: bytes = LAPTOP_SEED) -> dict:
    """What the service holds for the device before the report."""
    return {
        "registered_sign_key": b64e(ed25519_public(key)),
        "last_counter": counter,
        "held_digest": document_digest(held) if held is not None else None,
        "held_document": held,
    }


def vector(
    name: str,
    description: str,
    fields: dict[str, Any],
    expect: dict[str, Any],
    *,
    service: dict[str, Any] | None = None,
    endpoint: str = "small",
    **seal_args: Any,
) -> dict[str, Any]:
    envelope, construction = seal(fields, **seal_args)
    return {
        "name": name,
        "description": description,
        "envelope": envelope,
        "inputs": {"now": NOW, "max_skew": MAX_SKEW, "endpoint": endpoint},
        "service": service or state(),
        "construction": construction,
        "expect": expect,
    }


def accept(kind: str, document: dict[str, Any], counter: int = 8) -> dict[str, Any]:
    return {
        "verdict": "accept",
        "kind": kind,
        "counter": counter,
        "digest": document_digest(document),
        "document": document,
    }


def reject(code: str) -> dict[str, str]:
    return {"verdict": "reject", "code": code}


def report_vectors() -> list[dict[str, Any]]:
    d = delta(CHANGED, ACKED)
    wrong_claim = dict(d, digest=document_digest({**CHANGED, "extra": 1}))
    bad_change = copy.deepcopy(d)
    bad_change["changes"]["firewall"]["value"] = {"enabled": True}
    return [
        vector(
            "unchanged/accept",
            "an unchanged report: the digest held",
            body(),
            accept("unchanged", ACKED),
        ),
        vector(
            "delta/accept",
            "a delta: one section changed, one added, one removed",
            body(**d),
            accept("delta", CHANGED),
        ),
        vector(
            "full/accept",
            "the whole document, to the full endpoint",
            body(document=CHANGED, digest=document_digest(CHANGED)),
            accept("full", CHANGED),
            endpoint="full",
        ),
        vector(
            "full/accept-nothing-held",
            "the whole document when the service holds none",
            body(document=ACKED),
            accept("full", ACKED),
            service=state(held=None),
            endpoint="full",
        ),
        vector(
            "counter/equal",
            "the counter equals the last accepted one (a replay)",
            body(counter=7),
            reject("report_counter_stale"),
        ),
        vector("counter/lower", "a lower counter", body(counter=3), reject("report_counter_stale")),
        vector(
            "key/another-device",
            "signed by a key other than the registered one",
            body(),
            reject("device_key_mismatch"),
            signer=MALLORY_SEED,
        ),
        vector(
            "resync/base-not-held",
            "a delta against a digest the service does not hold",
            body(**delta(CHANGED, {**ACKED, "screen": {"lock": 300}})),
            reject("report_resync"),
        ),
        vector(
            "resync/nothing-held",
            "a delta when the service holds no document",
            body(**d),
            reject("report_resync"),
            service=state(held=None),
        ),
        vector(
            "resync/merged-digest-differs",
            "the delta merges into a document whose digest is not the claimed one",
            body(**wrong_claim),
            reject("report_resync"),
        ),
        vector(
            "resync/unchanged-not-held",
            "an unchanged report claiming a document the service does not hold",
            body(digest=document_digest(CHANGED)),
            reject("report_resync"),
        ),
        vector(
            "malformed/change-digest",
            "a change whose value does not match its digest",
            body(**bad_change),
            reject("malformed"),
        ),
        vector(
            "malformed/full-digest",
            "a whole document whose digest is not the claimed one",
            body(document=CHANGED),
            reject("malformed"),
            endpoint="full",
        ),
        vector(
            "malformed/full-to-small-endpoint",
            "the whole document sent to the small endpoint",
            body(document=ACKED),
            reject("malformed"),
        ),
        vector(
            "malformed/delta-and-full",
            "both a document and delta members",
            body(document=CHANGED, **d),
            reject("malformed"),
            endpoint="full",
        ),
        vector(
            "malformed/volatile-section",
            "a volatile field as a section of the document",
            body(**delta({**ACKED, "collected_at": "x"}, ACKED)),
            reject("malformed"),
        ),
        vector(
            "malformed/unknown-field", "an unknown body member", body(extra=1), reject("malformed")
        ),
        vector("malformed/counter-zero", "counter 0", body(counter=0), reject("malformed")),
        vector("malformed/counter-bool", "counter true", body(counter=True), reject("malformed")),
        vector(
            "malformed/digest-upper",
            "an upper-case digest",
            body(digest=document_digest(ACKED).upper()),
            reject("malformed"),
        ),
        vector(
            "clock/skew",
            "the agent clock 301 s behind",
            body(clock=NOW - 301),
            reject("clock_skew"),
        ),
        vector(
            "clock/at-bound",
            "the agent clock exactly 300 s ahead",
            body(clock=NOW + 300),
            accept("unchanged", ACKED),
        ),
        vector("version/body-1", "body version 1", body(v=1), reject("unsupported_version")),
        vector(
            "box/tampered",
            "one ciphertext bit flipped",
            body(),
            reject("box_open_failed"),
            tamper=True,
        ),
        vector(
            "box/wrong-key",
            "sealed to another key than the report box key",
            body(),
            reject("box_open_failed"),
            recipient=bindings.crypto_scalarmult_base(seed("other box")),
        ),
    ]


def ack_vectors() -> list[dict[str, Any]]:
    def ack(payload: dict[str, Any], signer: bytes = SERVER_SIGN_SEED) -> dict[str, str]:
        raw = canonical(payload)
        return {"ack": b64e(raw), "signature": b64e(ed25519_sign(signer, ACK_CONTEXT + raw))}

    fields = {
        "v": 2,
        "device_id": DEVICE_ID,
        "counter": 8,
        "digest": document_digest(CHANGED),
        "next_report_in": 300,
        "osquery_queries": {"usb": "SELECT * FROM usb_devices"},
        "time": NOW,
    }
    reset = dict(fields, counter=41, challenge=b64e(seed("reset challenge id", 16)))
    return [
        {
            "name": "ack/accept",
            "description": "the acknowledgement of an accepted report",
            "answer": {"status": "accepted", **ack(fields)},
            "expect": {"verdict": "accept", "ack": fields},
        },
        {
            "name": "ack/reset",
            "description": "the acknowledgement of a counter reset, bound to its challenge",
            "answer": {"status": "accepted", **ack(reset)},
            "expect": {"verdict": "accept", "ack": reset},
        },
        {
            "name": "ack/other-key",
            "description": "signed by another key",
            "answer": {"status": "accepted", **ack(fields, seed("other server"))},
            "expect": {"verdict": "reject", "code": "bad_ack_signature"},
        },
    ]


def build() -> dict[str, Any]:
    server_public = ed25519_public(SERVER_SIGN_SEED)
    key_signature = ed25519_sign(SERVER_SIGN_SEED, REPORT_KEY_CONTEXT + REPORT_PUBLIC)
    return {
        "protocol": 2,
        "constants": {
            "report_context": REPORT_CONTEXT.hex(),
            "ack_context": ACK_CONTEXT.hex(),
            "report_key_context": REPORT_KEY_CONTEXT.hex(),
            "section_prefix": SECTION_PREFIX.hex(),
            "document_prefix": DOCUMENT_PREFIX.hex(),
            "hkdf_salt": HKDF_SALT.hex(),
            "hkdf_info": HKDF_INFO.hex(),
            "max_small": 64 * 1024,
            "max_full": 1024 * 1024,
        },
        "keys": {
            "server": {
                "sign_seed": SERVER_SIGN_SEED.hex(),
                "sign_public": b64e(server_public),
                "box_secret": SERVER_BOX_SECRET.hex(),
                "report_box_secret": REPORT_SECRET.hex(),
                "report_box_public": b64e(REPORT_PUBLIC),
            },
            "devices": {
                "laptop": {
                    "sign_seed": LAPTOP_SEED.hex(),
                    "sign_public": b64e(ed25519_public(LAPTOP_SEED)),
                },
                "mallory": {
                    "sign_seed": MALLORY_SEED.hex(),
                    "sign_public": b64e(ed25519_public(MALLORY_SEED)),
                },
            },
            "ephemeral": {
                "secret": EPHEMERAL.hex(),
                "public": b64e(bindings.crypto_scalarmult_base(EPHEMERAL)),
            },
            "nonce": NONCE.hex(),
        },
        "report_key": {
            "advertisement": {
                "v": 2,
                "box_key": b64e(REPORT_PUBLIC),
                "signature": b64e(key_signature),
            },
            "expect": {"verdict": "accept", "box_key": b64e(REPORT_PUBLIC)},
        },
        "digests": {
            "document": ACKED,
            "sections": {name: section_digest(name, value) for name, value in ACKED.items()},
            "digest": document_digest(ACKED),
            "empty": document_digest({}),
        },
        "reports": report_vectors(),
        "acks": ack_vectors(),
    }


def render() -> str:
    """The exact text of v2.json."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if v2.json is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
