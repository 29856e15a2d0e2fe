"""Pieces of the agent's self-update on real files and a real HTTP server, without a service.

A new build that does not answer ``--version`` with the signed version never
replaces the old one; a download longer or shorter than the signed size is
refused and leaves no file; the configured update key wins over the one pinned
at enrollment; rollback puts ``.prev`` back.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from agent import update
from agent.state import Enrollment
from tests.updates.test_self_update_e2e import _static_server
from trust_protocol import update_manifest as um
from trust_protocol.encoding import b64e


def script(path: Path, version: str) -> Path:
    path.write_text(f"#!/bin/sh\necho devicetrust-agent {version}\n")
    path.chmod(0o755)
    return path


def test_a_build_with_the_wrong_version_never_replaces_the_old(tmp_path):
    exe = script(tmp_path / "devicetrust-agent", "0.1.0")
    new = script(tmp_path / ".incoming", "0.2.1")
    with pytest.raises(update.UpdateError) as exc:
        update.replace_executable(new, exe, "0.2.0")
    assert exc.value.code == "health_check_failed"
    assert sorted(os.listdir(tmp_path)) == ["devicetrust-agent"]
    assert "0.1.0" in exe.read_text()


def test_replace_keeps_prev_and_rollback_restores_it(tmp_path):
    exe = script(tmp_path / "devicetrust-agent", "0.1.0")
    new = script(tmp_path / ".incoming", "0.2.0")
    inode = exe.stat().st_ino
    update.replace_executable(new, exe, "0.2.0")
    assert update.answers_version(exe, "0.2.0")
    prev = update.prev_path(exe)
    assert prev.stat().st_ino == inode and update.answers_version(prev, "0.1.0")
    assert update.rollback(exe)
    assert update.answers_version(exe, "0.1.0") and not prev.exists()
    assert not update.rollback(exe)  # nothing left to roll back to


@pytest.mark.parametrize("served", [b"0123456789!", b"012345678", b"0123456780"])
def test_a_download_that_is_not_the_signed_build_is_refused(tmp_path, served):
    good = b"0123456789"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "build").write_bytes(served)
    server, url = _static_server(tmp_path / "www")
    try:
        entry = um.Artifact("0.2.0", f"{url}/build", hashlib.sha256(good).hexdigest(), len(good))
        target = tmp_path / "bin"
        with pytest.raises(update.UpdateError) as exc:
            update.download(entry, target)
        assert exc.value.code == "update_digest_mismatch"
        assert list(target.iterdir()) == []
        (tmp_path / "www" / "build").write_bytes(good)
        path = update.download(entry, target)
        assert path.read_bytes() == good and path.parent == target
    finally:
        server.shutdown()
        server.server_close()


def test_the_configured_key_wins_over_enrollment(monkeypatch):
    monkeypatch.delenv("DEVICETRUST_AGENT_UPDATE_KEY", raising=False)
    a, b = (b64e(bytes(SigningKey(bytes([i]) * 32).verify_key)) for i in (1, 2))
    enrollment = Enrollment(
        server_url="https://idp.example.com", server_key=a, kid="k", update_key=a
    )
    assert b64e(bytes(update.pinned_key(enrollment))) == a
    assert b64e(bytes(update.pinned_key(enrollment, b))) == b
    monkeypatch.setenv("DEVICETRUST_AGENT_UPDATE_KEY", b)
    assert b64e(bytes(update.pinned_key(enrollment))) == b
    assert update.pinned_key(None, None) is not None
    monkeypatch.delenv("DEVICETRUST_AGENT_UPDATE_KEY")
    assert update.pinned_key(None) is None
    with pytest.raises(update.UpdateError) as exc:
        update.pinned_key(None, "not-a-key")
    assert exc.value.code == "bad_update_key"


def test_intervals():
    assert update.parse_interval("6h") == 6 * 3600
    assert update.parse_interval("30m") == 1800
    assert update.parse_interval("90") == 90
    assert update.parse_interval("1 d") == 86400
    for bad in ("", "fast", "1s", "31d", "-5m"):
        with pytest.raises(ValueError):
            update.parse_interval(bad)
