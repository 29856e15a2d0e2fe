"""The audit log's keys and row MACs: what writing one audit row needs.

The audit key (``DEVICETRUST_AUDIT_KEY``, or ``audit.key`` in the data directory)
MACs every row as it is written (:func:`with_mac`, used by
:mod:`idp_service.platform.audit`); the checkpoint signing key and file are
located here too. The chain, the checkpoints and verification that build on
these live in :mod:`idp_service.platform.audit_chain`, which re-exports the
names below so callers keep one place to configure the audit (``configure``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from idp_service.platform.models import utcnow

CONTENT_FIELDS = (
    "at",
    "action",
    "outcome",
    "code",
    "actor",
    "user_id",
    "device_id",
    "remote_addr",
    "details",
)

_key: bytes | None = None
_data_dir: Path | None = None
_signer: SigningKey | None = None


# -- keys and configuration ------------------------------------------------------------------
def _key_file(path: Path, size: int = 32) -> bytes:
    """Read the hex key in ``path``, creating it (0600, in a 0700 directory) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(size) + "\n")
    return bytes.fromhex(path.read_text().strip())


def load_key(data_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    """The audit key: ``DEVICETRUST_AUDIT_KEY`` (hex), else ``audit.key`` in the data dir."""
    env = os.environ if env is None else env
    text_key = env.get("DEVICETRUST_AUDIT_KEY")
    if text_key:
        key = bytes.fromhex(text_key.strip())
        if len(key) < 32:
            raise ValueError("DEVICETRUST_AUDIT_KEY must be at least 32 bytes of hex")
        return key
    return _key_file(data_dir / "audit.key")


def load_checkpoint_key(data_dir: Path, env: Mapping[str, str] | None = None) -> SigningKey:
    """The checkpoint signing key (Ed25519): ``DEVICETRUST_AUDIT_CHECKPOINT_KEY`` (hex seed),
    else ``audit-checkpoint.key`` in the data dir. Separate from every other key."""
    env = os.environ if env is None else env
    text_key = env.get("DEVICETRUST_AUDIT_CHECKPOINT_KEY")
    if text_key:
        seed = bytes.fromhex(text_key.strip())
        if len(seed) != 32:
            raise ValueError("DEVICETRUST_AUDIT_CHECKPOINT_KEY must be 32 bytes of hex")
    else:
        seed = _key_file(data_dir / "audit-checkpoint.key")
    return SigningKey(seed)


def checkpoint_file(data_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where checkpoints are appended: ``DEVICETRUST_AUDIT_CHECKPOINT_FILE``, else the data dir."""
    env = os.environ if env is None else env
    configured = env.get("DEVICETRUST_AUDIT_CHECKPOINT_FILE")
    return Path(configured) if configured else data_dir / "audit-checkpoints.jsonl"


def configure(key: bytes, *, data_dir: Path | None = None) -> None:
    """Set this process's audit key, and the data dir its checkpoint key and file live in
    (the app factory and the CLI call this once)."""
    global _key, _data_dir, _signer
    _key = key
    if data_dir is not None and data_dir != _data_dir:
        _data_dir, _signer = data_dir, None


def _configured_data_dir() -> Path:
    global _data_dir
    if _data_dir is None:
        from idp_service.platform.config import Settings

        _data_dir = Settings.from_env().data_dir
    return _data_dir


def current_key() -> bytes:
    """This process's audit key: as configured, else loaded from the environment's settings."""
    global _key
    if _key is None:
        _key = load_key(_configured_data_dir())
    return _key


def current_signer() -> SigningKey:
    """This process's checkpoint signing key."""
    global _signer
    if _signer is None:
        _signer = load_checkpoint_key(_configured_data_dir())
    return _signer


def current_checkpoint_file() -> Path:
    """This process's checkpoint file."""
    return checkpoint_file(_configured_data_dir())


def key_id(verify_key: VerifyKey) -> str:
    """A short name of a checkpoint public key: the first 8 bytes of its SHA-256, hex."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


# -- row MACs and links ----------------------------------------------------------------------
def canonical_time(value: dt.datetime) -> str:
    """A time as the MAC and the checkpoints write it: UTC, microseconds, ``Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_bytes(values: dict[str, Any]) -> bytes:
    """The exact bytes a row's MAC covers: its content fields as canonical JSON."""
    doc = [
        canonical_time(values["at"]) if name == "at" else values.get(name)
        for name in CONTENT_FIELDS
    ]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def row_mac(values: dict[str, Any], key: bytes | None = None) -> str:
    """HMAC-SHA256 of a row's content, hex."""
    return hmac.new(key or current_key(), content_bytes(values), hashlib.sha256).hexdigest()


def with_mac(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus ``mac`` (and ``at`` if missing): what an INSERT into audit_events needs."""
    out = dict(values)
    out.setdefault("at", utcnow())
    out["mac"] = row_mac(out)
    return out
