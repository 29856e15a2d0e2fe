"""Rebuild ``tests/vectors/v1.json``, the protocol v1 test vectors, deterministically.

Usage (from the repository root)::

    python tests/vectors/generate.py          # rewrite v1.json
    python tests/vectors/generate.py --check  # exit 1 if v1.json is out of date

This script is deliberately a second, minimal implementation of the emitting
side of ``docs/protocol.md``: it uses libsodium (through PyNaCl's low-level
bindings), HKDF from ``cryptography`` and the standard ``json`` module, and
imports nothing from ``trust_protocol``. Every constant (signature contexts,
HKDF salt and info) is spelled out here again, so a change in the
implementation that alters the wire format makes ``tests/protocol/test_protocol_vectors.py``
fail instead of silently regenerating matching vectors.

All randomness is replaced by fixed values: every seed, secret, id and nonce is
``SHA-256("devicetrust/v1 test vectors/" + label)`` (truncated where shorter),
and the resulting hex is written into the file as well. The verdict of each
vector is stated here by intent, never computed by running a verifier.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings

OUT = Path(__file__).with_name("v1.json")

CHALLENGE_CONTEXT = b"devicetrust/v1/challenge\x00"
RESPONSE_CONTEXT = b"devicetrust/v1/response\x00"
NOTICE_CONTEXT = b"devicetrust/v1/notice\x00"
POLL_CONTEXT = b"devicetrust/v1/poll\x00"
HKDF_SALT = b"devicetrust/v1"
HKDF_INFO_PREFIX = b"devicetrust/v1/challenge-box\x00"

T0 = 1767225600  # 2026-01-01T00:00:00Z
ISSUED_AT = T0
EXPIRES_AT = T0 + 60
NOW = T0 + 5
CLOCK = NOW + 0.25  # the agent's clock: a quarter second ahead
MAX_SKEW = 300
MAX_SIZE = 1024 * 1024
ORIGIN = "https://idp.example.com"
AGENT_VERSION = "0.1.0"


# -- primitives ----------------------------------------------------------------------------


def seed(label: str, size: int = 32) -> bytes:
    """A fixed pseudo-random value named by ``label``."""
    return hashlib.sha256(b"devicetrust/v1 test vectors/" + label.encode()).digest()[:size]


def b64e(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Decode unpadded base64url (input known to be valid here)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 without \\u escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ed25519_public(sign_seed: bytes) -> bytes:
    """Ed25519 public key of a 32-byte seed."""
    public, _ = bindings.crypto_sign_seed_keypair(sign_seed)
    return public


def ed25519_sign(sign_seed: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes)."""
    _, secret = bindings.crypto_sign_seed_keypair(sign_seed)
    return bindings.crypto_sign(message, secret)[:64]


def x25519_public(secret: bytes) -> bytes:
    """X25519 public key of a raw 32-byte secret (clamped by X25519)."""
    return bindings.crypto_scalarmult_base(secret)


def box_seal(plaintext: bytes, recipient: bytes, sender_secret: bytes, nonce: bytes) -> bytes:
    """``nonce || crypto_box(plaintext)`` (XSalsa20-Poly1305 over X25519)."""
    return nonce + bindings.crypto_box_easy(plaintext, nonce, recipient, sender_secret)


def challenge_box_secret(box_secret: bytes, challenge_id: bytes) -> bytes:
    """The per-challenge X25519 secret: HKDF-SHA256(box_secret, salt, info || id), 32 bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=HKDF_SALT,
        info=HKDF_INFO_PREFIX + challenge_id,
    ).derive(box_secret)


def kid(sign_public: bytes) -> str:
    """Key id of a server signing key: base64url(SHA-256(public key)[:8])."""
    return b64e(hashlib.sha256(sign_public).digest()[:8])


def fingerprint(public: bytes) -> str:
    """``SHA256:`` + base64url(SHA-256(public key)), unpadded."""
    return "SHA256:" + b64e(hashlib.sha256(public).digest())


# -- fixed keys ----------------------------------------------------------------------------


class Server:
    """A server's signing seed and box secret."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sign_seed = seed(f"{name}/signing seed")
        self.box_secret = seed(f"{name}/box secret")
        self.sign_public = ed25519_public(self.sign_seed)
        self.kid = kid(self.sign_public)

    def box_public(self, challenge_id: bytes) -> bytes:
        return x25519_public(challenge_box_secret(self.box_secret, challenge_id))

    def to_json(self) -> dict[str, str]:
        return {
            "sign_seed": self.sign_seed.hex(),
            "sign_public": b64e(self.sign_public),
            "kid": self.kid,
            "box_secret": self.box_secret.hex(),
        }


class Device:
    """A device id and the seeds of its two key pairs."""

    def __init__(self, name: str, device_id: str) -> None:
        self.device_id = device_id
        self.sign_seed = seed(f"device {name}/signing seed")
        self.box_secret = seed(f"device {name}/box secret")
        self.sign_public = ed25519_public(self.sign_seed)
        self.box_public = x25519_public(self.box_secret)

    def public_json(self) -> dict[str, str]:
        return {
            "id": self.device_id,
            "sign_key": b64e(self.sign_public),
            "box_key": b64e(self.box_public),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "sign_seed": self.sign_seed.hex(),
            "sign_public": b64e(self.sign_public),
            "box_secret": self.box_secret.hex(),
            "box_public": b64e(self.box_public),
            "fingerprints": {
                "sign_key": fingerprint(self.sign_public),
                "box_key": fingerprint(self.box_public),
            },
        }


SERVER = Server("server")
OTHER_SERVER = Server("other server")
LAPTOP = Device("laptop", "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10")
DESKTOP = Device("desktop", "9a0e7c31-2d4b-4f8a-b6e5-71c3d9a2e4f6")
MALLORY = Device("mallory", "4f1c2a9e-6b8d-4e21-9a53-0c7d2e5b8f10")  # claims the laptop's id
EPHEMERAL_SECRET = seed("ephemeral secret")
EPHEMERAL_PUBLIC = x25519_public(EPHEMERAL_SECRET)
NONCE = seed("nonce", 24)

PLATFORM = {
    "hardware_uuid": "3c9a1f0e-52b7-4d6e-8a41-9b2c7e0d5f83",
    "serial": "PF3XK2QA",
    "os": "linux",
    "os_version": "6.12.0",
    "hostname": "laptop-01",
}

DROP = object()  # a field value meaning "leave the field out"

CHALLENGE_IDS = {
    "register": seed("challenge id/register", 16),
    "authenticate": seed("challenge id/authenticate", 16),
    "report": seed("challenge id/report", 16),
    "other": seed("challenge id/other", 16),
}


# -- challenges ----------------------------------------------------------------------------


def challenge_fields(purpose: str, server: Server = SERVER, /, **changes: Any) -> dict[str, Any]:
    """The signed JSON object of a challenge, as the service issues it."""
    cid = changes.pop("id_bytes", CHALLENGE_IDS[purpose])
    callback = {
        "register": ORIGIN + "/agent/v1/register",
        "authenticate": ORIGIN + "/agent/v1/callback",
        "report": ORIGIN + "/agent/v1/callback",
    }[purpose]
    binding = {
        "register": "enroll",
        "authenticate": "login:txn-0001",
        "report": "report:" + LAPTOP.device_id,
    }[purpose]
    fields: dict[str, Any] = {
        "v": 1,
        "id": b64e(cid),
        "purpose": purpose,
        "issued_at": ISSUED_AT,
        "expires_at": EXPIRES_AT,
        "box_key": b64e(SERVER.box_public(cid)),
        "origins": [ORIGIN],
        "callback": callback,
        "binding": binding,
        "kid": server.kid,
    }
    if purpose == "report":
        fields["data"] = {"checks": ["disk_encryption", "os_version"]}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not DROP}


def token_of(payload: bytes, signer: Server = SERVER) -> str:
    """The challenge token: b64url(payload) "." b64url(Ed25519(context || payload))."""
    signature = ed25519_sign(signer.sign_seed, CHALLENGE_CONTEXT + payload)
    return f"{b64e(payload)}.{b64e(signature)}"


def challenge_token(purpose: str, signer: Server = SERVER, /, **changes: Any) -> str:
    return token_of(canonical(challenge_fields(purpose, signer, **changes)), signer)


# -- responses -----------------------------------------------------------------------------


def body_fields(token: str, device: Device = LAPTOP, **changes: Any) -> dict[str, Any]:
    """The body object the agent signs."""
    fields: dict[str, Any] = {
        "v": 1,
        "challenge": token,
        "device": device.public_json(),
        "platform": dict(PLATFORM),
        "agent": {"version": AGENT_VERSION, "clock": CLOCK},
        "data": {},
    }
    fields.update(changes)
    return fields


class Built:
    """One envelope and how it was made."""

    def __init__(
        self,
        token: str,
        body: bytes,
        *,
        signer: Device = LAPTOP,
        signed_body: bytes | None = None,
        cid: bytes | None = None,
        recipient: bytes | None = None,
        envelope_changes: dict[str, Any] | None = None,
        sealed_edit: Any = None,
    ) -> None:
        payload = json.loads(b64d(token.split(".")[0]))
        challenge_id = b64d(payload["id"])
        self.token = token
        self.body = body
        signed = body if signed_body is None else signed_body
        self.signature = ed25519_sign(signer.sign_seed, RESPONSE_CONTEXT + signed)
        self.cid = challenge_id if cid is None else cid
        self.recipient = SERVER.box_public(self.cid) if recipient is None else recipient
        sealed = box_seal(self.signature + body, self.recipient, EPHEMERAL_SECRET, NONCE)
        if sealed_edit is not None:
            sealed = sealed_edit(sealed)
        self.sealed = sealed
        fields: dict[str, Any] = {
            "v": 1,
            "cid": b64e(self.cid),
            "epk": b64e(EPHEMERAL_PUBLIC),
            "box": b64e(sealed),
        }
        fields.update(envelope_changes or {})
        self.fields = fields
        self.envelope = canonical(fields).decode()

    def construction(self) -> dict[str, Any]:
        out: dict[str, Any] = {"challenge_token": self.token}
        try:
            out["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            out["body_hex"] = self.body.hex()
        out.update(
            {
                "device_signature": self.signature.hex(),
                "box_recipient": b64e(self.recipient),
                "ephemeral_public": b64e(EPHEMERAL_PUBLIC),
                "nonce": NONCE.hex(),
            }
        )
        return out


def standard(purpose: str, **body_changes: Any) -> Built:
    token = challenge_token(purpose)
    return Built(token, canonical(body_fields(token, **body_changes)))


def inputs(purposes: list[str], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "now": NOW,
        "purposes": purposes,
        "max_skew": MAX_SKEW,
        "max_size": MAX_SIZE,
    }
    out.update(extra)
    return out


def registered(device: Device = LAPTOP, state: str = "trusted", owner_active: bool = True) -> dict:
    return {
        "device_id": LAPTOP.device_id,
        "sign_key": b64e(device.sign_public),
        "state": state,
        "owner_active": owner_active,
    }


def accepted(built: Built, body: dict[str, Any], now: float = NOW) -> dict[str, Any]:
    """The expected decoded content of an accepted response."""
    payload = json.loads(b64d(built.token.split(".")[0]))
    challenge = dict(sorted({"data": {}, **payload}.items()))
    return {
        "verdict": "accept",
        "response": {
            "challenge": challenge,
            "device": body["device"],
            "platform": body["platform"],
            "agent": body["agent"],
            "clock_skew": body["agent"]["clock"] - now,
            "data": body.get("data", {}),
        },
    }


def reject(code: str) -> dict[str, str]:
    return {"verdict": "reject", "code": code}


def response_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []

    def add(
        name: str,
        description: str,
        built: Built | str,
        vector_inputs: dict[str, Any],
        expect: dict[str, Any],
    ) -> None:
        vector: dict[str, Any] = {"name": name, "description": description}
        if isinstance(built, Built):
            vector["envelope"] = built.envelope
            vector["inputs"] = vector_inputs
            vector["construction"] = built.construction()
        else:
            vector["envelope"] = built
            vector["inputs"] = vector_inputs
        vector["expect"] = expect
        vectors.append(vector)

    # ---- accepted ---------------------------------------------------------------------
    enroll_data = {"enrollment_code": "ABCD-EFGH-JKLM-NPQR"}
    register_ok = standard("register", data=enroll_data)
    add(
        "register/accept",
        "A register response carrying an enrollment code. Registration has no registry check.",
        register_ok,
        inputs(["register"]),
        accepted(register_ok, body_fields(register_ok.token, data=enroll_data)),
    )
    auth_ok = standard("authenticate")
    auth_body = body_fields(auth_ok.token)
    add(
        "authenticate/accept",
        "A login response from a trusted device of an active owner, bound to its transaction.",
        auth_ok,
        inputs(["authenticate"], expected_binding="login:txn-0001", registered_device=registered()),
        accepted(auth_ok, auth_body),
    )
    report_data = {"facts": {"disk_encryption": "on", "os_version": "6.12.0"}}
    report_ok = standard("report", data=report_data)
    add(
        "report/accept",
        "A posture report from a trusted device; the challenge carries data.",
        report_ok,
        inputs(["report"], registered_device=registered()),
        accepted(report_ok, body_fields(report_ok.token, data=report_data)),
    )
    behind = {"version": AGENT_VERSION, "clock": NOW - 200.5}
    skewed_ok = standard("authenticate", agent=behind)
    add(
        "authenticate/skew-tolerated",
        "The agent clock is 200.5 s behind; within max_skew the login succeeds and the skew "
        "is reported (clock_skew = agent clock - now).",
        skewed_ok,
        inputs(["authenticate"], registered_device=registered()),
        accepted(skewed_ok, body_fields(skewed_ok.token, agent=behind)),
    )
    edge = {"version": AGENT_VERSION, "clock": NOW + MAX_SKEW}
    edge_ok = standard("authenticate", agent=edge)
    add(
        "authenticate/skew-at-bound",
        "|agent clock - now| equal to max_skew is still tolerated.",
        edge_ok,
        inputs(["authenticate"]),
        accepted(edge_ok, body_fields(edge_ok.token, agent=edge)),
    )
    add(
        "authenticate/last-second",
        "now = expires_at - 1 is still valid.",
        auth_ok,
        inputs(["authenticate"], now=EXPIRES_AT - 1, max_skew=3600),
        accepted(auth_ok, auth_body, now=EXPIRES_AT - 1),
    )
    add(
        "authenticate/several-purposes",
        "The verifier may allow several purposes at once.",
        auth_ok,
        inputs(["report", "authenticate"]),
        accepted(auth_ok, auth_body),
    )
    f = auth_ok.fields
    loose = (
        '{\n  "box" : "' + f["box"] + '",\n\t"epk":"' + f["epk"] + '" , '
        '"cid":"' + f["cid"] + '",\r\n "v" : 1 }'
    )
    add(
        "envelope/non-canonical-json",
        "The envelope is not signed: whitespace and key order are free, and the verified "
        "content is the same as authenticate/accept.",
        loose,
        inputs(["authenticate"]),
        accepted(auth_ok, auth_body),
    )

    # ---- the box --------------------------------------------------------------------------
    def flip(index: int) -> Any:
        def edit(sealed: bytes) -> bytes:
            data = bytearray(sealed)
            data[index] ^= 0x01
            return bytes(data)

        return edit

    token = auth_ok.token
    body = canonical(auth_body)
    auth_in = inputs(["authenticate"])
    add(
        "box/tampered-ciphertext",
        "One bit of the last ciphertext byte is flipped.",
        Built(token, body, sealed_edit=flip(-1)),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/tampered-tag",
        "One bit of the Poly1305 tag (the 16 bytes after the nonce) is flipped.",
        Built(token, body, sealed_edit=flip(24)),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/tampered-nonce",
        "One bit of the nonce is flipped.",
        Built(token, body, sealed_edit=flip(0)),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/truncated",
        "The last byte of the box is cut off.",
        Built(token, body, sealed_edit=lambda s: s[:-1]),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/too-short",
        "A box shorter than nonce + tag + signature (104 bytes) is malformed before any "
        "crypto runs.",
        Built(token, body, sealed_edit=lambda s: s[:103]),
        auth_in,
        reject("malformed"),
    )
    other_box_key = OTHER_SERVER.box_public(CHALLENGE_IDS["authenticate"])
    add(
        "box/wrong-recipient-key",
        "Sealed to the key another server's box secret derives for this challenge id.",
        Built(token, body, recipient=other_box_key),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/other-challenge-key",
        "Sealed to the box key of another challenge id (the cid still names this one).",
        Built(token, body, recipient=SERVER.box_public(CHALLENGE_IDS["other"])),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/cid-swapped",
        "The envelope's cid is replaced by another challenge's id: the derived key differs.",
        Built(token, body, envelope_changes={"cid": b64e(CHALLENGE_IDS["other"])}),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/epk-low-order",
        "An all-zero ephemeral public key (low order point) never opens a box.",
        Built(token, body, envelope_changes={"epk": b64e(bytes(32))}),
        auth_in,
        reject("box_open_failed"),
    )
    add(
        "box/epk-swapped",
        "The ephemeral public key is replaced by another valid public key.",
        Built(token, body, envelope_changes={"epk": b64e(DESKTOP.box_public)}),
        auth_in,
        reject("box_open_failed"),
    )

    # ---- the echoed challenge --------------------------------------------------------------
    other_token = challenge_token("authenticate", OTHER_SERVER)
    add(
        "challenge/other-server-signature",
        "The challenge (same fields, kid of the other server) is signed by another server's "
        "key; the box is sealed to the right per-challenge key.",
        Built(other_token, canonical(body_fields(other_token))),
        auth_in,
        reject("challenge_unknown"),
    )
    signed_payload, signed_sig = token.split(".")
    tampered_payload = canonical(challenge_fields("authenticate", binding="login:txn-0002"))
    forged = f"{b64e(tampered_payload)}.{signed_sig}"
    add(
        "challenge/tampered-payload",
        "The challenge's binding is changed after the server signed it.",
        Built(forged, canonical(body_fields(forged))),
        auth_in,
        reject("bad_challenge_signature"),
    )
    v2_token = challenge_token("authenticate", v=2)
    add(
        "challenge/unsupported-version",
        "A server-signed challenge with v = 2.",
        Built(v2_token, canonical(body_fields(v2_token))),
        auth_in,
        reject("unsupported_version"),
    )
    long_token = challenge_token("authenticate", expires_at=ISSUED_AT + 121)
    add(
        "challenge/lifetime-over-120s",
        "A server-signed challenge with expires_at = issued_at + 121.",
        Built(long_token, canonical(body_fields(long_token))),
        auth_in,
        reject("malformed"),
    )
    add(
        "challenge/id-mismatch",
        "The body echoes the authenticate challenge, but the envelope's cid names another "
        "challenge and the box is sealed to that challenge's key.",
        Built(token, body, cid=CHALLENGE_IDS["other"]),
        auth_in,
        reject("challenge_mismatch"),
    )
    add(
        "challenge/wrong-purpose",
        "A valid register response offered where only authenticate is allowed.",
        register_ok,
        auth_in,
        reject("wrong_purpose"),
    )
    add(
        "challenge/expired",
        "now = expires_at: a challenge is valid only while now < expires_at.",
        auth_ok,
        inputs(["authenticate"], now=EXPIRES_AT),
        reject("challenge_expired"),
    )
    add(
        "challenge/expired-long-ago",
        "now is a day after expires_at.",
        auth_ok,
        inputs(["authenticate"], now=EXPIRES_AT + 86400, max_skew=10**6),
        reject("challenge_expired"),
    )

    # ---- the device signature --------------------------------------------------------------
    add(
        "device/signed-by-other-key",
        "The body names the laptop's keys but is signed by another Ed25519 key.",
        Built(token, body, signer=MALLORY),
        auth_in,
        reject("bad_device_signature"),
    )
    altered = canonical(body_fields(token, platform={**PLATFORM, "serial": "CLONED01"}))
    add(
        "device/body-altered-after-signing",
        "The platform serial is changed after the device signed the body; the box is valid.",
        Built(token, altered, signed_body=body),
        auth_in,
        reject("bad_device_signature"),
    )
    add(
        "device/key-swapped-in-body",
        "The body names the desktop's keys but is signed by the laptop.",
        Built(token, canonical(body_fields(token, device=DESKTOP)), signer=LAPTOP),
        auth_in,
        reject("bad_device_signature"),
    )

    # ---- encodings ------------------------------------------------------------------------
    fields = auth_ok.fields
    add(
        "base64/padded-cid",
        "cid carries '=' padding.",
        canonical({**fields, "cid": fields["cid"] + "=="}).decode(),
        auth_in,
        reject("malformed"),
    )
    epk = fields["epk"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(epk[-1])
    assert last & 0b11 == 0, "a 32-byte value's last character has two zero bits"
    noncanonical = epk[:-1] + alphabet[last | 0b01]
    add(
        "base64/non-canonical-epk",
        "The last character of epk has non-zero unused bits: it decodes to the same bytes "
        "but is a second spelling, which is refused.",
        canonical({**fields, "epk": noncanonical}).decode(),
        auth_in,
        reject("malformed"),
    )
    box_text = fields["box"]
    position = next(i for i, ch in enumerate(box_text) if ch in "-_")
    std = box_text[:position] + {"-": "+", "_": "/"}[box_text[position]] + box_text[position + 1 :]
    add(
        "base64/standard-alphabet",
        "The box is written in the standard base64 alphabet ('+' or '/').",
        canonical({**fields, "box": std}).decode(),
        auth_in,
        reject("malformed"),
    )
    add(
        "base64/length-1-mod-4",
        "The box text is padded with 'A' to a length of 1 mod 4, which no byte string has.",
        canonical({**fields, "box": box_text + "A" * ((1 - len(box_text)) % 4)}).decode(),
        auth_in,
        reject("malformed"),
    )
    auth_text = auth_ok.envelope
    add(
        "json/duplicate-key-envelope",
        'The envelope repeats "v" (with the same value).',
        '{"v":1,' + auth_text[1:],
        auth_in,
        reject("malformed"),
    )
    dup_body = b'{"v":1,' + body[1:]
    add(
        "json/duplicate-key-body",
        'The signed body repeats "v"; the box and the device signature are valid.',
        Built(token, dup_body),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/bool-version",
        'The envelope says "v": true; booleans are not numbers.',
        canonical({**fields, "v": True}).decode(),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/not-an-object",
        "The envelope is a JSON array.",
        json.dumps([fields["v"], fields["cid"], fields["epk"], fields["box"]]),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/trailing-garbage",
        "Something follows the envelope object.",
        auth_text + "x",
        auth_in,
        reject("malformed"),
    )
    nan_body = body.replace(str(CLOCK).encode(), b"NaN")
    assert nan_body != body
    add(
        "json/non-finite-clock",
        "The signed body's agent clock is NaN.",
        Built(token, nan_body),
        auth_in,
        reject("malformed"),
    )
    huge_body = body.replace(str(CLOCK).encode(), b"1e999")
    add(
        "json/overflowing-clock",
        "The signed body's agent clock is 1e999, beyond the range of a double.",
        Built(token, huge_body),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/huge-integer-clock",
        "The signed body's agent clock is a 400-digit integer.",
        Built(token, body.replace(str(CLOCK).encode(), b"9" * 400)),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/lone-surrogate",
        "The signed body's hostname holds an escaped lone surrogate (\\ud800).",
        Built(token, body.replace(b'"laptop-01"', b'"laptop-\\ud800"')),
        auth_in,
        reject("malformed"),
    )
    add(
        "json/body-not-utf8",
        "The signed body holds a byte that is not UTF-8.",
        Built(token, body.replace(b'"laptop-01"', b'"laptop-\xff"')),
        auth_in,
        reject("malformed"),
    )
    deep: Any = "x"
    for _ in range(16):
        deep = [deep]
    nested_ok = standard("authenticate", data={"n": deep[0][0]})
    add(
        "json/nesting-16-ok",
        "data nested so that the body holds exactly 16 levels of containers is accepted.",
        nested_ok,
        auth_in,
        accepted(nested_ok, body_fields(token, data={"n": deep[0][0]})),
    )
    add(
        "json/nesting-17",
        "The body holds 17 levels of containers.",
        standard("authenticate", data={"n": deep[0]}),
        auth_in,
        reject("malformed"),
    )
    add(
        "size/envelope-over-max-size",
        "A valid envelope offered to a verifier whose size cap is 1024 bytes.",
        auth_ok,
        inputs(["authenticate"], max_size=1024),
        reject("too_large"),
    )

    # ---- versions ------------------------------------------------------------------------
    add(
        "version/envelope-2",
        "The envelope says v = 2.",
        canonical({**fields, "v": 2}).decode(),
        auth_in,
        reject("unsupported_version"),
    )
    add(
        "version/body-2",
        "The signed body says v = 2.",
        Built(token, canonical(body_fields(token, v=2))),
        auth_in,
        reject("unsupported_version"),
    )

    # ---- clock ---------------------------------------------------------------------------
    ahead = {"version": AGENT_VERSION, "clock": NOW + MAX_SKEW + 1}
    add(
        "clock/ahead-beyond-bound",
        "The agent clock is max_skew + 1 s ahead.",
        standard("authenticate", agent=ahead),
        auth_in,
        reject("clock_skew"),
    )
    add(
        "clock/behind-beyond-configured-bound",
        "The agent clock is 200.5 s behind and this verifier tolerates only 60 s.",
        skewed_ok,
        inputs(["authenticate"], max_skew=60),
        reject("clock_skew"),
    )

    # ---- service-side judgments ------------------------------------------------------------
    add(
        "binding/mismatch",
        "A valid login response offered for another login transaction.",
        auth_ok,
        inputs(["authenticate"], expected_binding="login:txn-0002"),
        reject("binding_mismatch"),
    )
    registry_cases = [
        ("unknown", None, "device_unknown", "No record for the device id."),
        (
            "key-mismatch",
            registered(DESKTOP),
            "device_key_mismatch",
            "The record holds another signing key (a clone, or a re-install).",
        ),
        ("revoked", registered(state="revoked"), "device_revoked", "The device was revoked."),
        ("denied", registered(state="denied"), "device_denied", "The device was denied."),
        ("pending", registered(state="pending"), "device_pending", "The device awaits approval."),
        (
            "suspended",
            registered(state="suspended"),
            "device_suspended",
            "The device is suspended pending a security review (clone detection).",
        ),
        (
            "owner-inactive",
            registered(owner_active=False),
            "owner_inactive",
            "A trusted device whose owner is deactivated.",
        ),
        (
            "revoked-and-owner-inactive",
            registered(state="revoked", owner_active=False),
            "device_revoked",
            "Device state is judged before the owner.",
        ),
        (
            "key-mismatch-and-revoked",
            registered(DESKTOP, state="revoked"),
            "device_key_mismatch",
            "The key is judged before the state.",
        ),
    ]
    for name, record, code, description in registry_cases:
        add(
            f"registry/{name}",
            description,
            auth_ok,
            inputs(["authenticate"], registered_device=record),
            reject(code),
        )
    return vectors


# -- challenge-only and agent vectors ----------------------------------------------------


def challenge_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []

    def add(name: str, description: str, token: str, expect: dict[str, Any]) -> None:
        vectors.append({"name": name, "description": description, "token": token, "expect": expect})

    for purpose in ("register", "authenticate", "report"):
        fields = challenge_fields(purpose)
        add(
            f"{purpose}/accept",
            f"The {purpose} challenge used by the response vectors.",
            token_of(canonical(fields)),
            {
                "verdict": "accept",
                "payload": canonical(fields).decode(),
                "challenge": dict(sorted({"data": {}, **fields}.items())),
            },
        )

    def bad(name: str, description: str, code: str, **changes: Any) -> None:
        add(name, description, challenge_token("authenticate", **changes), reject(code))

    add(
        "signature/other-server",
        "Signed by another server's key (and naming it in kid).",
        challenge_token("authenticate", OTHER_SERVER),
        reject("challenge_unknown"),
    )
    payload = canonical(challenge_fields("authenticate"))
    add(
        "signature/no-context",
        "Signed by the right key, but over the payload without the context prefix.",
        f"{b64e(payload)}.{b64e(ed25519_sign(SERVER.sign_seed, payload))}",
        reject("bad_challenge_signature"),
    )
    add(
        "signature/response-context",
        "Signed by the right key over the response context instead of the challenge context.",
        f"{b64e(payload)}.{b64e(ed25519_sign(SERVER.sign_seed, RESPONSE_CONTEXT + payload))}",
        reject("bad_challenge_signature"),
    )
    good = token_of(payload)
    add("token/three-parts", "Three dot-separated parts.", good + ".AA", reject("malformed"))
    add("token/padded", "The signature part carries '=' padding.", good + "==", reject("malformed"))
    bad("version/2", "v = 2.", "unsupported_version", v=2)
    bad("lifetime/121s", "expires_at = issued_at + 121.", "malformed", expires_at=ISSUED_AT + 121)
    bad("lifetime/zero", "expires_at = issued_at (it must be later).", "malformed", expires_at=T0)
    longest = challenge_fields("authenticate", expires_at=ISSUED_AT + 120)
    add(
        "lifetime/120s",
        "expires_at = issued_at + 120, the longest lifetime allowed.",
        token_of(canonical(longest)),
        {
            "verdict": "accept",
            "payload": canonical(longest).decode(),
            "challenge": dict(sorted({"data": {}, **longest}.items())),
        },
    )
    short_id = seed("challenge id/short", 15)
    bad("id/15-bytes", "A 15-byte (120-bit) id.", "malformed", id_bytes=short_id, id=b64e(short_id))
    bad("purpose/unknown", 'purpose "login".', "malformed", purpose="login")
    bad("types/bool-timestamp", "issued_at is true.", "malformed", issued_at=True)
    bad("types/float-timestamp", "issued_at is 1767225600.0.", "malformed", issued_at=float(T0))
    bad(
        "origins/17",
        "17 origins (at most 16).",
        "malformed",
        origins=[f"https://{i}.example.com" for i in range(17)],
    )
    bad("origins/empty-string", 'origins holds "".', "malformed", origins=[""])
    bad("box-key/31-bytes", "box_key of 31 bytes.", "malformed", box_key=b64e(bytes(31)))
    bad("fields/missing-binding", "No binding field.", "malformed", binding=DROP)
    bad("types/null-binding", "binding is null.", "malformed", binding=None)
    bad(
        "size/over-8192",
        "A token longer than 8192 characters.",
        "too_large",
        data={"filler": "x" * 6200},
    )
    return vectors


def agent_vectors() -> list[dict[str, Any]]:
    """The checks the agent applies before it answers (``agent/authenticate.py``)."""
    auth = challenge_token("authenticate")
    register = challenge_token("register")
    other = challenge_token("authenticate", OTHER_SERVER)
    base = {
        "pinned_server_key": b64e(SERVER.sign_public),
        "server_url": ORIGIN,
        "origin": ORIGIN,
        "now": NOW,
        "purposes": ["authenticate"],
    }
    cases: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = [
        ("answer", "A fresh challenge from an allowed origin.", auth, {}, {"verdict": "answer"}),
        (
            "tolerance/expired-at-bound",
            "now = expires_at + 150: still answered (the server may have a different clock).",
            auth,
            {"now": EXPIRES_AT + 150},
            {"verdict": "answer"},
        ),
        (
            "tolerance/expired",
            "now = expires_at + 151.",
            auth,
            {"now": EXPIRES_AT + 151},
            {"verdict": "refuse", "code": "challenge_expired"},
        ),
        (
            "tolerance/early-at-bound",
            "now = issued_at - 150: still answered.",
            auth,
            {"now": ISSUED_AT - 150},
            {"verdict": "answer"},
        ),
        (
            "tolerance/early",
            "now = issued_at - 151: this device's clock is far behind.",
            auth,
            {"now": ISSUED_AT - 151},
            {"verdict": "refuse", "code": "clock_skew"},
        ),
        (
            "origin/not-allowed",
            "The requesting page's origin is not in the challenge's origins.",
            auth,
            {"origin": "https://evil.example"},
            {"verdict": "refuse", "code": "origin_not_allowed"},
        ),
        (
            "origin/missing",
            "The request carries neither Origin nor Referer.",
            auth,
            {"origin": None},
            {"verdict": "refuse", "code": "origin_not_allowed"},
        ),
        (
            "server/not-pinned",
            "The challenge is signed by a server other than the pinned one.",
            other,
            {},
            {"verdict": "refuse", "code": "unknown_server"},
        ),
        (
            "callback/not-enrolled-service",
            "The challenge's callback is not on the enrolled service's origin.",
            auth,
            {"server_url": "https://other.example.com"},
            {"verdict": "refuse", "code": "bad_callback"},
        ),
        (
            "purpose/register-on-login-path",
            "A register challenge offered on /v1/challenge (authenticate only).",
            register,
            {},
            {"verdict": "refuse", "code": "wrong_purpose"},
        ),
    ]
    return [
        {
            "name": name,
            "description": description,
            "token": token,
            "inputs": {**base, **changes},
            "expect": expect,
        }
        for name, description, token, changes, expect in cases
    ]


def base64_vectors() -> list[dict[str, Any]]:
    ok = [b"", b"\x00", b"\x00\x01", b"\xff\xfe\xfd", bytes(range(250, 256)), b"\xfb\xff"]
    out: list[dict[str, Any]] = [{"text": b64e(raw), "bytes": raw.hex()} for raw in ok]
    for text, why in [
        ("AA==", "padding"),
        ("AA=", "padding"),
        ("AB", "non-canonical: unused bits set"),
        ("AAF", "non-canonical: unused bits set"),
        ("A", "length 1 mod 4"),
        ("+/8", "standard alphabet"),
        ("AA A", "space"),
        ("AAA\n", "trailing newline"),
        ("AA.A", "not in the alphabet"),
    ]:
        out.append({"text": text, "error": "malformed", "why": why})
    return out


def box_key_vectors() -> list[dict[str, Any]]:
    cases = [(SERVER.box_secret, CHALLENGE_IDS[p]) for p in ("register", "authenticate", "report")]
    cases.append((OTHER_SERVER.box_secret, CHALLENGE_IDS["authenticate"]))
    cases.append((seed("long box secret", 32) * 2, seed("challenge id/64 bytes", 32) * 2))
    out = []
    for secret, cid in cases:
        private = challenge_box_secret(secret, cid)
        out.append(
            {
                "box_secret": secret.hex(),
                "challenge_id": b64e(cid),
                "info": (HKDF_INFO_PREFIX + cid).hex(),
                "private": private.hex(),
                "public": b64e(x25519_public(private)),
            }
        )
    return out


# -- notices (section 14) ------------------------------------------------------------------

NOTICE_EPHEMERAL = seed("notice ephemeral secret")
NOTICE_NONCE = seed("notice nonce", 24)
NOTICE_MAX_SEALED = 32 + 24 + 16 + 64 + 2048
NOTICE_NOW = T0 + 30


def notice_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": 1,
        "kind": "approval",
        "kid": SERVER.kid,
        "id": "6a0f3c2e-8d41-4b7a-9e15-2c3d4f5a6b7c",
        "to": LAPTOP.device_id,
        "issued_at": T0,
        "expires_at": T0 + 600,
        "code": "K7QM-W3XP",
        "device": {
            "hostname": "desktop-02",
            "platform": "linux",
            "serial": "PF9ZZ1QB",
            "first_seen": T0 - 10,
        },
    }
    for key, value in changes.items():
        if value is DROP:
            fields.pop(key)
        else:
            fields[key] = value
    return fields


def seal_notice_bytes(
    payload: bytes,
    *,
    signer: Server = SERVER,
    recipient: Device = LAPTOP,
    context: bytes = NOTICE_CONTEXT,
) -> bytes:
    """``epk || nonce || crypto_box(signature || payload)`` with the fixed ephemeral key."""
    signature = ed25519_sign(signer.sign_seed, context + payload)
    return x25519_public(NOTICE_EPHEMERAL) + box_seal(
        signature + payload, recipient.box_public, NOTICE_EPHEMERAL, NOTICE_NONCE
    )


def notice_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, description: str, sealed: bytes, expect: dict[str, Any], **kw: Any) -> None:
        out.append(
            {
                "name": name,
                "description": description,
                "sealed": b64e(sealed),
                "recipient": kw.get("recipient", "laptop"),
                "device_id": kw.get("device_id", LAPTOP.device_id),
                "server": "server",
                "now": kw.get("now", NOTICE_NOW),
                "expect": expect,
            }
        )

    good = canonical(notice_fields())
    add(
        "accept",
        "A valid approval notice for the laptop",
        seal_notice_bytes(good),
        {"verdict": "accept", "notice": notice_fields()},
    )
    null_device = notice_fields(
        device={"hostname": None, "platform": None, "serial": None, "first_seen": T0}
    )
    add(
        "accept_nulls",
        "hostname, platform and serial may be null",
        seal_notice_bytes(canonical(null_device)),
        {"verdict": "accept", "notice": null_device},
    )
    sealed = bytearray(seal_notice_bytes(good))
    sealed[80] ^= 0x01
    add("tampered_box", "One ciphertext bit flipped", bytes(sealed), reject("box_open_failed"))
    add(
        "sealed_to_desktop",
        "Sealed to another device's box key",
        seal_notice_bytes(good, recipient=DESKTOP),
        reject("box_open_failed"),
    )
    add(
        "other_server",
        "Signed by a server key the device did not pin",
        seal_notice_bytes(good, signer=OTHER_SERVER),
        reject("bad_notice_signature"),
    )
    add(
        "challenge_context",
        "Signed under the challenge context instead of the notice one",
        seal_notice_bytes(good, context=CHALLENGE_CONTEXT),
        reject("bad_notice_signature"),
    )
    add(
        "other_kid",
        "Signed by the pinned key but naming another key id",
        seal_notice_bytes(canonical(notice_fields(kid=OTHER_SERVER.kid))),
        reject("bad_notice_signature"),
    )
    resealed = canonical(notice_fields(to=DESKTOP.device_id))
    add(
        "resealed_to_laptop",
        "The desktop's notice, re-sealed to the laptop's box key",
        seal_notice_bytes(resealed),
        reject("notice_wrong_device"),
    )
    add(
        "expired",
        "now is at expires_at",
        seal_notice_bytes(good),
        reject("notice_expired"),
        now=T0 + 600,
    )
    spaced = json.dumps(notice_fields(), sort_keys=True).encode()
    add("not_canonical", "JSON with spaces", seal_notice_bytes(spaced), reject("malformed"))
    extra = canonical(notice_fields(extra="x"))
    add("extra_field", "An unknown field", seal_notice_bytes(extra), reject("malformed"))
    add(
        "missing_field",
        "No code",
        seal_notice_bytes(canonical(notice_fields(code=DROP))),
        reject("malformed"),
    )
    add(
        "version_2",
        "v is 2",
        seal_notice_bytes(canonical(notice_fields(v=2))),
        reject("unsupported_version"),
    )
    add(
        "unknown_kind",
        "kind is not approval",
        seal_notice_bytes(canonical(notice_fields(kind="wipe"))),
        reject("malformed"),
    )
    add(
        "long_lifetime",
        "expires_at more than a day after issued_at",
        seal_notice_bytes(canonical(notice_fields(expires_at=T0 + 86401))),
        reject("malformed"),
    )
    dup = good[:-1] + b',"v":1}'
    add("duplicate_key", "v appears twice", seal_notice_bytes(dup), reject("malformed"))
    add("too_short", "Shorter than any notice", seal_notice_bytes(good)[:100], reject("malformed"))
    add(
        "too_large", "One byte over the size cap", bytes(NOTICE_MAX_SEALED + 1), reject("too_large")
    )
    return out


def poll_body(payload: bytes, signer_seed: bytes, context: bytes = POLL_CONTEXT) -> str:
    signature = ed25519_sign(signer_seed, context + payload)
    return canonical({"poll": b64e(payload), "signature": b64e(signature)}).decode()


def poll_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    good = canonical({"device_id": LAPTOP.device_id, "time": NOW, "v": 1})

    def add(name: str, description: str, body: str, expect: dict[str, Any], now: int = NOW) -> None:
        out.append(
            {
                "name": name,
                "description": description,
                "body": body,
                "registered": "laptop",
                "now": now,
                "window": 120,
                "expect": expect,
            }
        )

    add(
        "accept",
        "A fresh poll signed by the laptop",
        poll_body(good, LAPTOP.sign_seed),
        {"verdict": "accept", "device_id": LAPTOP.device_id, "time": NOW},
    )
    add(
        "accept_edge",
        "120 s old: at the edge of the window",
        poll_body(good, LAPTOP.sign_seed),
        {"verdict": "accept", "device_id": LAPTOP.device_id, "time": NOW},
        now=NOW + 120,
    )
    add(
        "stale",
        "121 s old",
        poll_body(good, LAPTOP.sign_seed),
        reject("poll_expired"),
        now=NOW + 121,
    )
    add(
        "future",
        "121 s ahead",
        poll_body(good, LAPTOP.sign_seed),
        reject("poll_expired"),
        now=NOW - 121,
    )
    add(
        "mallory",
        "Signed by another key claiming the laptop's id",
        poll_body(good, MALLORY.sign_seed),
        reject("bad_poll_signature"),
    )
    add(
        "response_context",
        "Signed under the response context",
        poll_body(good, LAPTOP.sign_seed, RESPONSE_CONTEXT),
        reject("bad_poll_signature"),
    )
    spaced = json.dumps({"device_id": LAPTOP.device_id, "time": NOW, "v": 1}).encode()
    add(
        "not_canonical",
        "Payload with spaces",
        poll_body(spaced, LAPTOP.sign_seed),
        reject("malformed"),
    )
    extra = canonical({"device_id": LAPTOP.device_id, "time": NOW, "v": 1, "x": 1})
    add(
        "extra_field",
        "An unknown payload field",
        poll_body(extra, LAPTOP.sign_seed),
        reject("malformed"),
    )
    add(
        "version_2",
        "v is 2",
        poll_body(
            canonical({"device_id": LAPTOP.device_id, "time": NOW, "v": 2}), LAPTOP.sign_seed
        ),
        reject("unsupported_version"),
    )
    add(
        "no_signature",
        "The signature is missing",
        canonical({"poll": b64e(good)}).decode(),
        reject("malformed"),
    )
    return out


def build() -> dict[str, Any]:
    """The whole vector file as a JSON-ready object."""
    return {
        "protocol": 1,
        "description": (
            "devicetrust protocol v1 test vectors; see docs/protocol.md, section 'Test vectors'. "
            "Regenerate with: python tests/vectors/generate.py"
        ),
        "constants": {
            "challenge_context": CHALLENGE_CONTEXT.hex(),
            "response_context": RESPONSE_CONTEXT.hex(),
            "notice_context": NOTICE_CONTEXT.hex(),
            "poll_context": POLL_CONTEXT.hex(),
            "hkdf_salt": HKDF_SALT.hex(),
            "hkdf_info_prefix": HKDF_INFO_PREFIX.hex(),
            "max_lifetime": 120,
            "agent_clock_tolerance": 150,
        },
        "keys": {
            "server": SERVER.to_json(),
            "other_server": OTHER_SERVER.to_json(),
            "devices": {
                "laptop": LAPTOP.to_json(),
                "desktop": DESKTOP.to_json(),
                "mallory": MALLORY.to_json(),
            },
            "ephemeral": {
                "secret": EPHEMERAL_SECRET.hex(),
                "public": b64e(EPHEMERAL_PUBLIC),
            },
            "nonce": NONCE.hex(),
        },
        "base64url": base64_vectors(),
        "box_keys": box_key_vectors(),
        "challenges": challenge_vectors(),
        "responses": response_vectors(),
        "agent_checks": agent_vectors(),
        "notices": notice_vectors(),
        "polls": poll_vectors(),
    }


def render() -> str:
    """The exact text of v1.json."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if v1.json is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date; run python tests/vectors/generate.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
