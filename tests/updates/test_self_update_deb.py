"""Self-update of a package-managed agent: the agent finds dpkg in charge and uses it.

A real ``.deb`` (built with ``dpkg-deb``) holding the agent executable is
installed with real ``dpkg`` into a throwaway root (``--root``); the agent
running from that root detects the package, takes the ``linux-<arch>-deb``
entry of a signed manifest, downloads and verifies the next package and
installs it with ``dpkg -i``. No service is needed: the manifest is signed in
the test and served by a static file server, as a mirror would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tests.updates.test_self_update_e2e import MACHINE, _static_server, agent_env, build_agent
from trust_protocol import update_manifest as um
from trust_protocol.challenge import key_id
from trust_protocol.encoding import b64e

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None, reason="needs dpkg"
)
KEY = SigningKey(b"\x21" * 32)
EXE = "opt/devicetrust-agent/bin/devicetrust-agent"


def build_deb(tmp: Path, version: str) -> Path:
    tree = tmp / f"deb-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: devicetrust-agent\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        "Maintainer: devicetrust tests <tests@example.com>\n"
        "Description: devicetrust agent (self-update test package)\n"
    )
    build_agent(tree / EXE, version)
    out = tmp / "pool" / f"devicetrust-agent_{version}_all.deb"
    out.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def dpkg_version(root: Path) -> str:
    return subprocess.run(
        ["dpkg-query", f"--root={root}", "-W", "-f=${Version}", "devicetrust-agent"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_a_deb_install_updates_through_dpkg(tmp_path):
    root = tmp_path / "root"
    for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / sub).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    old, new = build_deb(tmp_path, "0.1.0"), build_deb(tmp_path, "0.2.0")
    subprocess.run(["dpkg", f"--root={root}", "-i", str(old)], check=True, capture_output=True)
    assert dpkg_version(root) == "0.1.0"

    platform = f"linux-{MACHINE}-deb"
    server, url = _static_server(tmp_path / "pool")
    try:
        data = new.read_bytes()
        signed = um.sign_manifest(
            um.Manifest(
                kid=key_id(KEY.verify_key),
                serial=int(time.time()),
                issued_at=int(time.time()),
                expires_at=int(time.time()) + 3600,
                artifacts={
                    platform: um.Artifact(
                        "0.2.0", f"{url}/{new.name}", hashlib.sha256(data).hexdigest(), len(data)
                    )
                },
            ),
            KEY,
        )
        (tmp_path / "pool" / "manifest.json").write_bytes(signed.document())
        env = agent_env(20999, "deb")
        env.update(
            DEVICETRUST_AGENT_DPKG_ROOT=str(root),
            DEVICETRUST_AGENT_UPDATE_KEY=b64e(bytes(KEY.verify_key)),
            DEVICETRUST_AGENT_UPDATE_URL=f"{url}/manifest.json",
        )
        exe = root / EXE
        state = tmp_path / "state"

        def agent(*args: str) -> dict:
            out = subprocess.run(
                [str(exe), "--state-dir", str(state), *args, "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        check = agent("update", "check")
        assert (check["install"], check["platform"], check["action"]) == (
            "deb",
            platform,
            "install",
        )
        applied = agent("update", "apply")
        assert applied["install"] == "deb" and applied["installed"] == "0.2.0"
    finally:
        server.shutdown()
        server.server_close()
    assert dpkg_version(root) == "0.2.0"
    version = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True)
    assert version.stdout.split()[-1] == "0.2.0"
    assert not (root / (EXE + ".prev")).exists()  # dpkg replaced it, not the agent
    assert not list((state / "updates").iterdir())  # the downloaded package is removed
