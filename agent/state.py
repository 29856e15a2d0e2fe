"""The agent's enrollment: which service it belongs to, pinned at enrollment time.

``enrollment.json`` in the state directory holds the service URL, its pinned
challenge-signing key, the browser origins the service allows, and what the
service said about this device. It is not secret (0644 is fine), but the agent
never answers a challenge that the pinned key did not sign.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nacl.signing import VerifyKey

from trust_protocol.encoding import b64d

FILE = "enrollment.json"


@dataclass
class Enrollment:
    """What the agent pinned about its service."""

    server_url: str
    server_key: str  # base64url Ed25519 public key
    kid: str
    origins: list[str] = field(default_factory=list)
    agent_ports: list[int] = field(default_factory=list)
    user: str = ""
    state: str = ""
    enrolled_at: float = 0.0
    update_key: str = ""  # base64url Ed25519: the service's update key, when it has one

    @property
    def verify_key(self) -> VerifyKey:
        """The pinned key that signs every challenge this agent will answer."""
        return VerifyKey(b64d(self.server_key, length=32, field="server_key"))

    @property
    def server_origin(self) -> str:
        """scheme://host[:port] of the service."""
        parts = urlsplit(self.server_url)
        return f"{parts.scheme}://{parts.netloc}"

    def to_json(self) -> dict[str, Any]:
        """JSON form, as stored."""
        return asdict(self)


def load(state_dir: Path) -> Enrollment | None:
    """The stored enrollment, or None before ``enroll``."""
    path = state_dir / FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Enrollment(**{k: v for k, v in data.items() if k in Enrollment.__dataclass_fields__})


def save(state_dir: Path, enrollment: Enrollment) -> None:
    """Write the enrollment atomically."""
    tmp = state_dir / (FILE + ".tmp")
    tmp.write_text(json.dumps(enrollment.to_json(), indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, state_dir / FILE)
