"""Rebuild ``tests/vectors/reauth_v1.json``, the re-authentication token vectors (§17).

Usage (from the repository root)::

    python tests/vectors/generate_reauth.py          # rewrite the file
    python tests/vectors/generate_reauth.py --check  # exit 1 if it is out of date

Like ``generate.py``, this is a second, minimal implementation of the emitting
side of ``docs/protocol.md`` §17: libsodium through PyNaCl's low-level bindings,
``hashlib`` and the standard ``json`` module, and nothing from ``trust_protocol``.
The grant's signature context, the token hash's context and layout and every
bound are spelled out here again, so a change in the implementation that alters
the format makes ``tests/protocol/test_reauth_vectors.py`` fail. Every verdict is
stated by intent, never computed by running the verifier.

Fixed values are ``SHA-256("devicetrust/v1 test vectors/" + label)``; the server
and device keys are those of ``v1.json`` (same labels).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from nacl import bindings

OUT = Path(__file__).with_name("reauth_v1.json")

GRANT_CONTEXT = b"devicetrust/v1/reauth-grant\x00"
HASH_CONTEXT = b"devicetrust/v1/reauth-token\x00"
NOTICE_CONTEXT = b"devicetrust/v1/notice\x00"
T0 = 1767225600  # 2026-01-01T00:00:00Z
ISSUED_AT = T0
EXPIRES_AT = T0 + 30 * 86400
NOW = T0 + 3600
LAPTOP_ID = "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10"
DESKTOP_ID = "9a0e7c31-2d4b-4f8a-b6e5-71c3d9a2e4f6"
CHALLENGE = "c2lnbi1pbi1jaGFsbGVuZ2UtMDE"
FAMILY = "5f0c3e1a9b2d4c6e8f7a1b3c5d7e9f01"


def seed(label: str, size: int = 32) -> bytes:
    return hashlib.sha256(b"devicetrust/v1 test vectors/" + label.encode()).digest()[:size]


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ed25519_public(sign_seed: bytes) -> bytes:
    return bindings.crypto_sign_seed_keypair(sign_seed)[0]


def ed25519_sign(sign_seed: bytes, message: bytes) -> bytes:
    _, secret = bindings.crypto_sign_seed_keypair(sign_seed)
    return bindings.crypto_sign(message, secret)[:64]


def x25519_public(secret: bytes) -> bytes:
    return bindings.crypto_scalarmult_base(secret)


def kid(sign_public: bytes) -> str:
    return b64e(hashlib.sha256(sign_public).digest()[:8])


SERVER_SEED = seed("server/signing seed")
OTHER_SEED = seed("other server/signing seed")
SERVER_KID = kid(ed25519_public(SERVER_SEED))
OTHER_KID = kid(ed25519_public(OTHER_SEED))
LAPTOP_SIGN = ed25519_public(seed("device laptop/signing seed"))
LAPTOP_BOX_SECRET = seed("device laptop/box secret")
DESKTOP_BOX_SECRET = seed("device desktop/box secret")
EPHEMERAL = seed("reauth ephemeral secret")
NONCE = seed("reauth nonce", 24)
TOKEN = b64e(seed("reauth token"))
TOKEN_2 = b64e(seed("reauth token 2"))


def token_hash(token: str, device_id: str, sign_key: bytes) -> str:
    device = device_id.encode()
    return hashlib.sha256(
        HASH_CONTEXT + struct.pack(">H", len(device)) + device + sign_key + token.encode()
    ).hexdigest()


def grant_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": 1,
        "kind": "reauth",
        "kid": SERVER_KID,
        "to": LAPTOP_ID,
        "challenge": CHALLENGE,
        "family": FAMILY,
        "token": TOKEN,
        "issued_at": ISSUED_AT,
        "expires_at": EXPIRES_AT,
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not DROP}


DROP = object()


def seal(
    payload: bytes,
    *,
    signer: bytes = SERVER_SEED,
    recipient_secret: bytes = LAPTOP_BOX_SECRET,
    context: bytes = GRANT_CONTEXT,
) -> bytes:
    signature = ed25519_sign(signer, context + payload)
    ciphertext = bindings.crypto_box_easy(
        signature + payload, NONCE, x25519_public(recipient_secret), EPHEMERAL
    )
    return x25519_public(EPHEMERAL) + NONCE + ciphertext


def reject(code: str) -> dict[str, str]:
    return {"verdict": "reject", "code": code}


def grant_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, description: str, sealed: bytes, expect: dict[str, Any], **kw: Any) -> None:
        out.append(
            {
                "name": name,
                "description": description,
                "sealed": b64e(sealed),
                "device_id": kw.get("device_id", LAPTOP_ID),
                "now": kw.get("now", NOW),
                "expect": expect,
            }
        )

    good = canonical(grant_fields())
    add(
        "accept",
        "A valid grant for the laptop",
        seal(good),
        {"verdict": "accept", "grant": grant_fields()},
    )
    tampered = bytearray(seal(good))
    tampered[90] ^= 0x01
    add("tampered_box", "One ciphertext bit flipped", bytes(tampered), reject("box_open_failed"))
    add(
        "sealed_to_desktop",
        "Sealed to another device's box key",
        seal(good, recipient_secret=DESKTOP_BOX_SECRET),
        reject("box_open_failed"),
    )
    add(
        "other_server",
        "Signed by a server key the device did not pin",
        seal(good, signer=OTHER_SEED),
        reject("bad_grant_signature"),
    )
    add(
        "notice_context",
        "Signed under the notice context: a notice is not a grant",
        seal(good, context=NOTICE_CONTEXT),
        reject("bad_grant_signature"),
    )
    add(
        "other_kid",
        "Signed by the pinned key but naming another key id",
        seal(canonical(grant_fields(kid=OTHER_KID))),
        reject("bad_grant_signature"),
    )
    add(
        "to_desktop",
        "Addressed to the desktop, opened by the laptop",
        seal(canonical(grant_fields(to=DESKTOP_ID))),
        reject("grant_wrong_device"),
    )
    add(
        "expired",
        "Opened at its expires_at",
        seal(good),
        reject("grant_expired"),
        now=EXPIRES_AT,
    )
    add(
        "too_long",
        "Lives longer than 366 days",
        seal(canonical(grant_fields(expires_at=ISSUED_AT + 367 * 86400))),
        reject("malformed"),
    )
    add(
        "short_token",
        "A token of 42 characters",
        seal(canonical(grant_fields(token=TOKEN[:42]))),
        reject("malformed"),
    )
    add(
        "extra_field",
        "An extra member",
        seal(canonical({**grant_fields(), "device": "x"})),
        reject("malformed"),
    )
    add(
        "missing_family",
        "No family",
        seal(canonical(grant_fields(family=DROP))),
        reject("malformed"),
    )
    add(
        "not_canonical",
        "Signed payload with whitespace",
        seal(json.dumps(grant_fields(), sort_keys=True).encode()),
        reject("malformed"),
    )
    add(
        "version_2",
        "An unknown version",
        seal(canonical(grant_fields(v=2))),
        reject("unsupported_version"),
    )
    return out


def hash_vectors() -> list[dict[str, Any]]:
    return [
        {
            "name": "laptop",
            "token": TOKEN,
            "device_id": LAPTOP_ID,
            "sign_key": b64e(LAPTOP_SIGN),
            "hash": token_hash(TOKEN, LAPTOP_ID, LAPTOP_SIGN),
        },
        {
            "name": "other_token",
            "token": TOKEN_2,
            "device_id": LAPTOP_ID,
            "sign_key": b64e(LAPTOP_SIGN),
            "hash": token_hash(TOKEN_2, LAPTOP_ID, LAPTOP_SIGN),
        },
        {
            "name": "other_device_same_key",
            "token": TOKEN,
            "device_id": DESKTOP_ID,
            "sign_key": b64e(LAPTOP_SIGN),
            "hash": token_hash(TOKEN, DESKTOP_ID, LAPTOP_SIGN),
        },
    ]


def build() -> dict[str, Any]:
    return {
        "description": "devicetrust v1 re-authentication grants and token hashes (§17)",
        "constants": {"grant_context": GRANT_CONTEXT.hex(), "hash_context": HASH_CONTEXT.hex()},
        "ephemeral_secret": EPHEMERAL.hex(),
        "nonce": NONCE.hex(),
        "grants": grant_vectors(),
        "hashes": hash_vectors(),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
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
