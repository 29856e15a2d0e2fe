"""The server's key material: one Ed25519 signing key and one box secret.

Each challenge gets its own X25519 key pair, derived with HKDF-SHA256 from the
box secret and the challenge id. Any replica holding the same secret can open
a response without a private key ever being stored per challenge.

This module is server-only: it needs ``cryptography`` for HKDF, which the lean
agent install does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

from trust_protocol.challenge import key_id

HKDF_SALT = b"devicetrust/v1"
HKDF_INFO_PREFIX = b"devicetrust/v1/challenge-box\x00"


@dataclass(frozen=True)
class ServerKeys:
    """The signing key and box secret, loaded once per process."""

    signing_key: SigningKey
    box_secret: bytes

    def __post_init__(self) -> None:
        if len(self.box_secret) < 32:
            raise ValueError("box secret must be at least 32 bytes")

    @classmethod
    def from_seeds(cls, sign_seed: bytes, box_secret: bytes) -> ServerKeys:
        """Build from a 32-byte Ed25519 seed and a box secret of 32 or more bytes."""
        return cls(SigningKey(sign_seed), box_secret)

    def _verify_key(self) -> VerifyKey:
        """The public half of the signing key, which agents pin at enrollment."""
        return self.signing_key.verify_key

    def _kid(self) -> str:
        """The signing key's id, carried in every challenge."""
        return key_id(self.verify_key)

    # Cached by assignment rather than with a decorator: mutmut does not mutate decorated
    # functions (docs/testing.md, "Mutation testing").
    verify_key = cached_property(_verify_key)
    kid = cached_property(_kid)

    def challenge_box_secret(self, challenge_id: bytes) -> bytes:
        """The raw X25519 private key of one challenge: HKDF(secret, salt, info || id)."""
        return HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=HKDF_SALT,
            info=HKDF_INFO_PREFIX + challenge_id,
        ).derive(self.box_secret)

    def challenge_box_key(self, challenge_id: bytes) -> PrivateKey:
        """The X25519 key pair of one challenge (its public half goes in the challenge)."""
        return PrivateKey(self.challenge_box_secret(challenge_id))
