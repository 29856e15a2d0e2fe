"""Helpers for the posture tests: replay a recorded device, make real SSH keys."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from agent.collectors.base import Host

FIXTURES = Path(__file__).parent / "fixtures" / "posture"


def make_ssh_key(path: Path, kind: str, passphrase: str, fmt: str | None = None) -> Path:
    """A real, throwaway private key made by ssh-keygen (never committed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "test", "-f", str(path)]
    if fmt:
        argv += ["-m", fmt]
    subprocess.run(argv, check=True, capture_output=True)
    return path


def recorded_host(case: str, tmp_path: Path) -> Host:
    """``tests/fixtures/posture/<case>`` copied to tmp_path, with its SSH keys generated."""
    dest = tmp_path / case.replace("/", "_")
    shutil.copytree(FIXTURES / case, dest, symlinks=True)
    spec = json.loads((dest / "host.json").read_text())
    for key in spec.get("ssh_keys", []):
        relative = key["path"].replace("\\", "/").replace(":", "", 1).lstrip("/")
        make_ssh_key(dest / "root" / relative, key["type"], key["passphrase"], key.get("format"))
    return Host.from_recording(dest)
