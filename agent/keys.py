"""The device's key files: created once, 0600 in a 0700 directory, checked on every load.

Layout of the state directory::

    device_id        the device id (random UUID, not secret)
    sign.key         Ed25519 seed, base64url (secret)
    box.key          X25519 private key, base64url (secret)

The agent refuses to run when the directory or a key file is readable by anyone
but its owner, and says how to fix it.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import uuid
from pathlib import Path

from trust_protocol.device_keys import DeviceKeys
from trust_protocol.encoding import b64d, b64e

SECRET_FILES = ("sign.key", "box.key")


class KeyPermissionError(Exception):
    """The state directory or a key file is more open than it must be."""


def _check_mode(path: Path, wanted: int) -> None:
    if sys.platform == "win32":  # NTFS ACLs, set by the installer; POSIX bits mean nothing here
        return
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        raise KeyPermissionError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}).\n"
            f"Run the agent as the owner, or fix it: chown -R {os.geteuid()} {path}"
        )
    if mode & ~wanted:
        kind = "directory" if path.is_dir() else "file"
        raise KeyPermissionError(
            f"{path} has mode {mode:04o}; the {kind} must be {wanted:04o} "
            "because it holds the device's private keys.\n"
            f"Fix it: chmod {wanted:o} {path}"
        )


def check_permissions(state_dir: Path) -> None:
    """Raise :class:`KeyPermissionError` unless the directory is 0700 and secrets 0600."""
    _check_mode(state_dir, 0o700)
    for name in SECRET_FILES:
        path = state_dir / name
        if path.exists():
            _check_mode(path, 0o600)


def _write_secret(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data + "\n")


def ensure_state_dir(state_dir: Path) -> None:
    """Create the state directory 0700 if missing (parents as needed)."""
    if not state_dir.exists():
        state_dir.mkdir(parents=True, mode=0o700)
        os.chmod(state_dir, 0o700)


def load_or_create(state_dir: Path) -> tuple[DeviceKeys, bool]:
    """Load the device keys, creating them on first start; return ``(keys, created)``."""
    ensure_state_dir(state_dir)
    check_permissions(state_dir)
    id_path = state_dir / "device_id"
    created = False
    if not (state_dir / "sign.key").exists():
        device_id = str(uuid.uuid4())
        _write_secret(state_dir / "sign.key", b64e(secrets.token_bytes(32)))
        _write_secret(state_dir / "box.key", b64e(secrets.token_bytes(32)))
        id_path.write_text(device_id + "\n")
        os.chmod(id_path, 0o644)
        created = True
    check_permissions(state_dir)
    device_id = id_path.read_text().strip()
    sign_seed = b64d((state_dir / "sign.key").read_text().strip(), length=32, field="sign.key")
    box_seed = b64d((state_dir / "box.key").read_text().strip(), length=32, field="box.key")
    return DeviceKeys.from_seeds(device_id, sign_seed, box_seed), created
