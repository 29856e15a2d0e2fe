"""SSH private keys: passphrase or not, from the header alone; key material never leaves."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collectors.base import Host
from agent.collectors.common import LocalUser, classify_private_key, scan_ssh_keys
from tests.posture_helpers import make_ssh_key

CASES = [
    # kind, passphrase, -m format, expected (type, format, encrypted)
    ("ed25519", "", None, ("ssh-ed25519", "openssh", False)),
    ("ed25519", "secret", None, ("ssh-ed25519", "openssh", True)),
    ("rsa", "", None, ("ssh-rsa", "openssh", False)),
    ("ecdsa", "secret", None, ("ecdsa-sha2-nistp256", "openssh", True)),
    ("rsa", "", "PEM", ("ssh-rsa", "pem", False)),
    ("rsa", "secret", "PEM", ("ssh-rsa", "pem", True)),
    ("ecdsa", "", "PEM", ("ecdsa", "pem", False)),
    ("ed25519", "", "PKCS8", ("ssh-ed25519", "openssh", False)),  # ssh-keygen keeps OpenSSH
    ("ecdsa", "", "PKCS8", ("ecdsa", "pkcs8", False)),
    ("rsa", "secret", "PKCS8", (None, "pkcs8", True)),
]


@pytest.mark.parametrize(("kind", "passphrase", "fmt", "expected"), CASES)
def test_real_keys_classified(tmp_path, kind, passphrase, fmt, expected):
    path = make_ssh_key(tmp_path / "key", kind, passphrase, fmt)
    info = classify_private_key(path.read_bytes())
    assert (info["type"], info["format"], info["encrypted"]) == expected


def test_public_keys_and_other_files_are_not_keys(tmp_path):
    path = make_ssh_key(tmp_path / "key", "ed25519", "")
    assert classify_private_key((tmp_path / "key.pub").read_bytes()) is None
    assert classify_private_key(b"Host *\n  User git\n") is None
    assert classify_private_key(b"") is None
    assert classify_private_key(path.read_bytes()[:40]) is not None  # truncated still a key
    putty = b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\n"
    assert classify_private_key(putty) == {
        "type": "ssh-ed25519",
        "format": "putty",
        "encrypted": False,
    }
    putty_enc = putty.replace(b"none", b"aes256-cbc")
    assert classify_private_key(putty_enc)["encrypted"] is True


def _secret_chunks(path):
    """Base64 runs from the key body: none of these may appear in what we report."""
    body = re.sub(r"-----[^-]+-----", "", path.read_text())
    flat = "".join(body.split())
    return [flat[i : i + 24] for i in range(0, len(flat) - 24, 24)]


def test_scan_reports_paths_not_material_and_skips_symlinks(tmp_path):
    home = tmp_path / "home"
    ssh = home / ".ssh"
    plain = make_ssh_key(ssh / "id_ed25519", "ed25519", "")
    make_ssh_key(ssh / "id_rsa", "rsa", "secret")
    (ssh / "known_hosts").write_text("example.com ssh-ed25519 AAAA\n")
    outside = make_ssh_key(tmp_path / "elsewhere" / "root_key", "ed25519", "")
    os.symlink(outside, ssh / "linked_key")
    user = LocalUser(os.environ.get("USER", "me"), os.getuid(), str(home))
    result = scan_ssh_keys(Host.local(), [user])
    names = sorted(k["path"].rsplit("/", 1)[1] for k in result["keys"])
    assert names == ["id_ed25519", "id_rsa"]  # the symlink is not followed
    assert result["unencrypted_count"] == 1
    text = json.dumps(result)
    for chunk in _secret_chunks(plain):
        assert chunk not in text


def test_a_symlinked_ssh_directory_is_not_followed(tmp_path):
    elsewhere = tmp_path / "other-user" / ".ssh"
    make_ssh_key(elsewhere / "id_ed25519", "ed25519", "")
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(elsewhere, home / ".ssh")
    user = LocalUser("me", os.getuid(), str(home))
    result = scan_ssh_keys(Host.local(), [user])
    assert result["keys"] == []


def test_files_owned_by_someone_else_are_skipped(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    home = tmp_path / "home"
    key = make_ssh_key(home / ".ssh" / "id_ed25519", "ed25519", "")
    os.chown(home / ".ssh", 65534, 65534)
    user = LocalUser("nobody", 65534, str(home))
    assert scan_ssh_keys(Host.local(), [user])["keys"] == []  # the key file is root's
    os.chown(key, 65534, 65534)
    assert len(scan_ssh_keys(Host.local(), [user])["keys"]) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_classifier_never_raises_on_arbitrary_bytes(data):
    result = classify_private_key(data)
    assert result is None or set(result) == {"type", "format", "encrypted"}


@settings(max_examples=200, deadline=None)
@given(
    label=st.sampled_from(
        ["OPENSSH PRIVATE KEY", "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
    ),
    body=st.binary(max_size=300),
    headers=st.text(max_size=60),
)
def test_classifier_never_raises_on_hostile_pem(label, body, headers):
    encoded = base64.b64encode(b"openssh-key-v1\0" + body).decode()
    text = f"-----BEGIN {label}-----\n{headers}\n\n{encoded}\n-----END {label}-----\n"
    result = classify_private_key(text.encode("utf-8", "surrogatepass"))
    assert result is not None
    assert result["encrypted"] in (True, False, None)
