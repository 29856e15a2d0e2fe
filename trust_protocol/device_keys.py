"""A device's long-term key pairs: Ed25519 for signing, X25519 for receiving boxes.

The private halves never leave the device. Storing them on disk with safe
permissions is the agent's job (``agent/keys.py``); this module only holds them
and names them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from trust_protocol.encoding import b64e


def fingerprint(public_key: bytes) -> str:
    """SSH-style fingerprint of a public key: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + b64e(hashlib.sha256(public_key).digest())


@dataclass(frozen=True)
class DeviceKeys:
    """The device id and its two key pairs."""

    device_id: str
    signing_key: SigningKey
    box_key: PrivateKey

    @classmethod
    def generate(cls, device_id: str) -> DeviceKeys:
        """Fresh random keys for a new device."""
        return cls(device_id, SigningKey.generate(), PrivateKey.generate())

    @classmethod
    def from_seeds(cls, device_id: str, sign_seed: bytes, box_seed: bytes) -> DeviceKeys:
        """Rebuild keys from their 32-byte seeds (as stored on disk, or in test vectors)."""
        return cls(device_id, SigningKey(sign_seed), PrivateKey(box_seed))

    # Each property below delegates to an undecorated method: mutmut does not mutate
    # decorated functions (docs/testing.md, "Mutation testing").
    @property
    def sign_public(self) -> bytes:
        """Raw Ed25519 public key."""
        return self._sign_public()

    def _sign_public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def box_public(self) -> bytes:
        """Raw X25519 public key."""
        return self._box_public()

    def _box_public(self) -> bytes:
        return bytes(self.box_key.public_key)

    def public_json(self) -> dict[str, str]:
        """The ``device`` object of a response body."""
        return {
            "id": self.device_id,
            "sign_key": b64e(self.sign_public),
            "box_key": b64e(self.box_public),
        }

    def fingerprints(self) -> dict[str, str]:
        """Fingerprints of both public keys, for people to compare."""
        return {"sign_key": fingerprint(self.sign_public), "box_key": fingerprint(self.box_public)}
