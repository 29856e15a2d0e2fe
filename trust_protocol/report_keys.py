"""The service's report box key (report ceremony v2), derived from its box secret.

Server-only (it needs ``cryptography`` for HKDF). A v2 report has no challenge,
so it is boxed to one X25519 key per service, derived like the per-challenge
keys of §3.2 with its own info string. Every replica holding the box secret
derives the same key; the service advertises its public half, signed
(:func:`trust_protocol.report_v2.sign_report_key`).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey

HKDF_SALT = b"devicetrust/v2"
HKDF_INFO = b"devicetrust/v2/report-box\x00"


def report_box_secret(box_secret: bytes) -> bytes:
    """The raw X25519 private key reports are boxed to: HKDF(box secret, salt, info)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO).derive(
        box_secret
    )


def report_box_public(box_secret: bytes) -> bytes:
    """Its public half, as advertised."""
    return bytes(PrivateKey(report_box_secret(box_secret)).public_key)
