"""The Linux collectors run for real on this machine: structure and invariants, not its values."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from agent.collectors import collect_facts
from agent.collectors.base import CommandNotFound, Host, SubprocessRunner
from agent.collectors.common import LocalUser
from trust_protocol.facts_schema import ROOTS, validate_facts

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="Linux only"),
]


@pytest.fixture(scope="module")
def facts():
    return collect_facts()


def test_document_is_complete_and_valid(facts):
    assert validate_facts(facts) == []
    assert list(facts) == list(ROOTS)
    assert facts["os"]["family"] == "linux"
    assert facts["os"]["kernel"] == os.uname().release
    collected = dt.datetime.fromisoformat(facts["collected_at"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - collected).total_seconds()) < 60
    assert {e["collector"] for e in facts["errors"]} <= set(ROOTS)


def test_uptime_agrees_with_proc(facts):
    proc_uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 0 <= facts["uptime_seconds"] <= proc_uptime + 120


def test_volumes_agree_with_device_mapper(facts):
    """Only volumes on a dm-crypt device (or ZFS) may be encrypted; the rest must say no."""
    crypt_devices = [
        p.parent.parent.name
        for p in Path("/sys/block").glob("dm-*/dm/uuid")
        if p.read_text().startswith("CRYPT-")
    ]
    volumes = facts["disk_encryption"]["volumes"]
    assert volumes, "this machine mounts at least one block device"
    for v in volumes:
        assert v["encrypted"] in (True, False, None)
        assert v["layers"][-1] in ("disk", "part", "crypt", "lvm", "raid1", "zfs", "md", "mpath")
        if "crypt" in v["layers"]:
            assert crypt_devices
        if v["fstype"] != "zfs" and "crypt" not in v["layers"]:
            assert v["encrypted"] is False
    mounted_sources = {
        line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
    }
    for v in volumes:
        if v["role"] != "swap":
            assert set(v["mountpoints"]) <= mounted_sources


def test_packages_agree_with_dpkg_status(facts):
    if not Path("/var/lib/dpkg/status").exists():
        pytest.skip("not a dpkg system")
    blocks = Path("/var/lib/dpkg/status").read_text(errors="replace").split("\n\n")
    installed = {
        line.split(": ", 1)[1]
        for block in blocks
        if "\nStatus: install ok installed" in "\n" + block
        for line in block.splitlines()
        if line.startswith("Package: ")
    }
    pkgs = facts["packages"]
    assert pkgs["manager"] == "dpkg"
    assert pkgs["count"] >= len(installed)
    assert installed <= {n.split(":")[0] for n in pkgs["installed"]} | set(pkgs["installed"])


def test_firewall_agrees_with_nft(facts):
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.skip("needs root and nft")
    ruleset = json.loads(
        subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True).stdout
    )
    has_input_chain = any(
        "chain" in item and item["chain"].get("hook") == "input" for item in ruleset["nftables"]
    )
    fw = facts["firewall"]
    assert fw["products"][0]["name"] == "nftables"
    if not has_input_chain:
        assert fw["enabled"] is False and fw["default_inbound"] == "allow"


def test_secure_boot_agrees_with_firmware(facts):
    if not Path("/sys/firmware/efi").is_dir():
        assert facts["secure_boot"] == {"supported": False, "enabled": False}
    else:
        assert facts["secure_boot"]["supported"] in (True, False)


def test_collection_spawns_few_processes():
    # How much CPU a collection costs is measured by bench/agent.py, not here.
    host = Host.local()
    collect_facts(host)
    assert host.runner.spawned <= 8


def test_gnome_screen_lock_read_for_real_in_another_users_context():
    """runuser + gsettings for real, as `nobody`: agrees with gsettings run directly."""
    if os.geteuid() != 0 or not shutil.which("gsettings") or not shutil.which("runuser"):
        pytest.skip("needs root, runuser and gsettings")
    schemas = subprocess.run(["gsettings", "list-schemas"], capture_output=True, text=True).stdout
    if "org.gnome.desktop.screensaver" not in schemas.split():
        pytest.skip("needs the GNOME desktop schemas (gsettings-desktop-schemas)")
    from agent.collectors.linux import _user_screen_lock

    host = Host.local()
    entry = _user_screen_lock(host, LocalUser("nobody", 65534, "/nonexistent", "GNOME", True))
    direct = subprocess.run(
        ["gsettings", "get", "org.gnome.desktop.session", "idle-delay"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": "/nonexistent", "XDG_CONFIG_HOME": "/nonexistent"},
    ).stdout.split()[-1]
    assert entry["source"] == "gsettings"
    assert entry["idle_seconds"] == int(direct)
    assert isinstance(entry["enabled"], bool)
    assert host.runner.spawned == 1  # runuser, one shell, every schema


def test_missing_program_is_reported_not_raised():
    runner = SubprocessRunner()
    with pytest.raises(CommandNotFound):
        runner.run(["definitely-not-a-real-program-xyz"])
    result = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"]) is result  # cached


def test_command_timeout_kills(tmp_path):
    from agent.collectors.base import CommandTimeout

    # Without the kill this would wait an hour (and pytest-timeout fails the test).
    marker = "3599.5"
    with pytest.raises(CommandTimeout):
        SubprocessRunner().run(["sleep", marker], timeout=0.2)
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]
    ]
