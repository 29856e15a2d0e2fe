"""Collectors replayed on recorded devices: Linux disk layouts this machine lacks, macOS, Windows.

Every Linux fixture's command outputs are in the formats of util-linux 2.38
lsblk, dmsetup, OpenZFS ``zfs get``, nft 1.0.6 and GLib gsettings; macOS and
Windows outputs follow each tool's documented format (see the fixtures' README).
"""

from __future__ import annotations

import json
import threading

import pytest

from agent.collectors import collect_facts
from agent.collectors.base import Collector, CommandResult, Host, RecordedRunner, run_collectors
from tests.posture_helpers import FIXTURES, recorded_host
from trust_protocol.facts_schema import validate_facts

ALL_CASES = sorted(
    f"{p.parent.parent.name}/{p.parent.name}" for p in FIXTURES.glob("*/*/host.json")
)


def facts_for(case, tmp_path):
    host = recorded_host(case, tmp_path)
    return collect_facts(host), host


def volume(facts, mountpoint):
    return next(v for v in facts["disk_encryption"]["volumes"] if v["mountpoint"] == mountpoint)


def test_every_platform_has_fixtures():
    assert {c.split("/")[0] for c in ALL_CASES} == {"linux", "macos", "windows"}
    assert len(ALL_CASES) >= 10


@pytest.mark.parametrize("case", ALL_CASES)
def test_fixture_document_matches_schema(case, tmp_path):
    facts, host = facts_for(case, tmp_path)
    assert validate_facts(facts) == []
    assert facts["os"]["family"] == host.platform
    assert facts["collected_at"] == "2025-01-01T00:00:00Z"
    # Few processes per collection: every command is recorded, so count them.
    assert len(host.runner.calls) <= 14, host.runner.calls


def test_lvm_on_luks2_is_encrypted(tmp_path):
    facts, _ = facts_for("linux/lvm_on_luks", tmp_path)
    disk = facts["disk_encryption"]
    assert disk["system_volume_encrypted"] is True
    assert disk["all_encrypted"] is True
    root = volume(facts, "/")
    assert root["layers"] == ["disk", "part", "crypt", "lvm"]
    assert (root["method"], root["cipher"]) == ("luks2", "aes-xts-plain64")
    swap = volume(facts, "[SWAP]")
    assert swap["role"] == "swap" and swap["encrypted"] is True
    assert volume(facts, "/boot")["role"] == "boot"
    assert volume(facts, "/boot")["encrypted"] is False


def test_lvm_on_luks_device_rest_of_facts(tmp_path):
    facts, _ = facts_for("linux/lvm_on_luks", tmp_path)
    assert facts["firewall"]["enabled"] is True
    assert facts["firewall"]["default_inbound"] == "block"
    assert {p["name"] for p in facts["firewall"]["products"]} == {"nftables", "ufw"}
    user = facts["screen_lock"]["users"][0]
    assert (user["user"], user["source"], user["enabled"]) == ("alice", "gsettings", True)
    assert user["timeout_seconds"] == 330  # idle-delay 300 + lock-delay 30
    assert facts["auto_updates"]["enabled"] is True
    assert facts["secure_boot"] == {"supported": True, "enabled": True}
    assert facts["security_chip"] == {"kind": "tpm", "present": True, "version": "2.0"}
    assert facts["security_software"]["products"] == ["CrowdStrike Falcon"]
    assert facts["security_software"]["edr_running"] is True
    assert facts["hardware"]["serial"] == "PF3LX0ZQ"
    # The snap, not the transitional deb, is the Firefox people run on Ubuntu.
    assert facts["browsers"]["firefox"] == "133.0.3-1"
    assert "old-removed" not in facts["packages"]["installed"]
    keys = {k["path"].rsplit("/", 1)[1]: k for k in facts["ssh_keys"]["keys"]}
    assert set(keys) == {"id_ed25519", "id_rsa_work"}
    assert keys["id_ed25519"]["encrypted"] is False
    assert keys["id_ed25519"]["type"] == "ssh-ed25519"
    assert keys["id_rsa_work"]["encrypted"] is True
    assert keys["id_rsa_work"]["type"] == "ssh-rsa"
    assert facts["ssh_keys"]["unencrypted_count"] == 1


def test_luks1_without_root(tmp_path):
    facts, host = facts_for("linux/luks1", tmp_path)
    root = volume(facts, "/")
    assert root["encrypted"] is True and root["method"] == "luks1"
    assert root["mountpoints"] == ["/", "/home"]
    assert root["cipher"] is None  # dmsetup needs root; encryption is still known
    assert facts["firewall"]["enabled"] is None  # ruleset unreadable, no manager says yes
    assert facts["hardware"]["serial"] is None
    kde = facts["screen_lock"]["users"][0]
    assert (kde["source"], kde["enabled"], kde["timeout_seconds"]) == ("kscreenlockerrc", True, 630)
    assert facts["errors"] == []


def test_luks2_btrfs_fedora(tmp_path):
    facts, _ = facts_for("linux/luks2", tmp_path)
    root = volume(facts, "/")
    assert (root["method"], root["fstype"], root["mountpoints"]) == (
        "luks2",
        "btrfs",
        ["/", "/home"],
    )
    assert facts["disk_encryption"]["all_encrypted"] is True
    # zram swap is memory, not storage: it is not a volume.
    assert all(not v["device"].startswith("/dev/zram") for v in facts["disk_encryption"]["volumes"])
    assert facts["firewall"]["default_inbound"] == "block"  # firewalld's final reject
    assert facts["auto_updates"] == {
        "enabled": True,
        "mechanism": "dnf-automatic",
        "check_enabled": True,
        "install_enabled": True,
    }
    # Only local, user-class sessions count; one user with two sessions is one user.
    assert facts["console_users"] == ["carol"]
    assert facts["screen_lock"]["max_timeout_seconds"] == 900
    assert facts["secure_boot"]["enabled"] is False


def test_plain_dmcrypt_and_cipher_null(tmp_path):
    facts, _ = facts_for("linux/plain_dmcrypt", tmp_path)
    root = volume(facts, "/")
    assert (root["encrypted"], root["method"], root["cipher"]) == (
        True,
        "plain",
        "aes-cbc-essiv:sha256",
    )
    scratch = volume(facts, "/scratch")
    assert scratch["encrypted"] is False and scratch["cipher"] == "cipher_null-ecb"
    assert volume(facts, "/data")["encrypted"] is False
    assert volume(facts, "/run/media/erin/USB")["role"] == "removable"
    assert facts["disk_encryption"]["system_volume_encrypted"] is True
    assert facts["disk_encryption"]["all_encrypted"] is False
    assert not any(v["mountpoint"].startswith("/snap") for v in facts["disk_encryption"]["volumes"])
    assert facts["packages"]["manager"] == "pacman"
    assert facts["security_software"]["av_running"] is True
    assert facts["security_software"]["edr_running"] is False


def test_zfs_native_encryption(tmp_path):
    facts, host = facts_for("linux/zfs_encrypted", tmp_path)
    root = volume(facts, "/")
    assert (root["encrypted"], root["method"], root["cipher"], root["status"]) == (
        True,
        "zfs",
        "aes-256-gcm",
        "available",
    )
    assert volume(facts, "/home/frank")["encrypted"] is True
    assert volume(facts, "/boot")["encrypted"] is False
    assert volume(facts, "/boot")["role"] == "boot"
    assert facts["disk_encryption"]["all_encrypted"] is True
    zfs_calls = [c for c in host.runner.calls if c[0] == "zfs"]
    assert len(zfs_calls) == 1  # one process for every dataset
    assert facts["auto_updates"]["enabled"] is False  # Unattended-Upgrade "0"


def test_unencrypted_disk(tmp_path):
    facts, _ = facts_for("linux/unencrypted", tmp_path)
    disk = facts["disk_encryption"]
    assert disk["system_volume_encrypted"] is False
    assert disk["all_encrypted"] is False
    assert all(v["method"] is None and v["layers"] == ["disk", "part"] for v in disk["volumes"])
    assert facts["firewall"]["enabled"] is False
    assert facts["screen_lock"]["all_enabled"] is False
    assert facts["hardware"]["vendor"] is None  # "To Be Filled By O.E.M."
    assert facts["hardware"]["hardware_uuid"] is None
    keys = {k["path"].rsplit("/", 1)[1]: k for k in facts["ssh_keys"]["keys"]}
    assert (keys["id_rsa"]["format"], keys["id_rsa"]["encrypted"]) == ("pem", False)
    assert (keys["deploy.pem"]["format"], keys["deploy.pem"]["encrypted"]) == ("pem", True)
    assert (keys["ci_key"]["format"], keys["ci_key"]["encrypted"]) == ("pkcs8", False)
    assert keys["ci_key"]["type"] == "ecdsa"
    assert facts["ssh_keys"]["unencrypted_count"] == 2


def test_zfs_on_luks_counts_as_encrypted(tmp_path):
    """A pool with encryption=off whose vdevs are dm-crypt devices is still encrypted."""
    host = recorded_host("linux/zfs_encrypted", tmp_path)
    lsblk = {
        "blockdevices": [
            {
                "name": "sda",
                "kname": "sda",
                "type": "disk",
                "children": [
                    {
                        "name": "sda1",
                        "kname": "sda1",
                        "type": "part",
                        "fstype": "crypto_LUKS",
                        "fsver": "2",
                        "children": [
                            {
                                "name": "luks-zfs",
                                "kname": "dm-3",
                                "type": "crypt",
                                "fstype": "zfs_member",
                                "label": "tank",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    from agent.collectors.linux import zfs_volumes

    host.runner = RecordedRunner(
        {
            json.dumps(["zfs", "get", "-H", "-p", "-o", "name,property,value",
                        "encryption,keystatus,encryptionroot", "tank/home"]): CommandResult(
                ("zfs",), 0, "tank/home\tencryption\toff\ntank/home\tkeystatus\t-\n"
            )
        }
    )  # fmt: skip
    (vol,) = zfs_volumes(host, [("tank/home", "/home", "zfs")], lsblk, {})
    assert vol["encrypted"] is True
    assert vol["layers"] == ["disk", "part", "crypt", "zfs"]
    assert vol["method"] == "luks2"  # from the container's FSVER: no sysfs entry recorded


def test_macos_managed(tmp_path):
    facts, host = facts_for("macos/sonoma_managed", tmp_path)
    assert facts["os"]["version"] == "14.7.2" and facts["os"]["build"] == "23H311"
    assert facts["hardware"]["serial"] == "C02ZK1ABMD6T"
    assert facts["disk_encryption"]["system_volume_encrypted"] is True
    assert facts["security_chip"]["present"] is True
    lock = facts["screen_lock"]["users"][0]
    assert (lock["enabled"], lock["idle_seconds"], lock["delay_seconds"]) == (True, 300, 5)
    assert facts["system_integrity"] == {"sip_enabled": True, "gatekeeper_enabled": True}
    assert facts["management"]["mdm_enrolled"] is True
    assert facts["management"]["mdm_provider"] == "acme.jamfcloud.com"
    assert facts["browsers"] == {"chrome": "131.0.6778.205", "safari": "18.2"}
    assert facts["ssh_keys"]["keys"][0]["encrypted"] is True
    # Screen lock is read in the console user's context, never as root.
    user_calls = [c for c in host.runner.calls if c[:2] == ("launchctl", "asuser")]
    assert {c[2] for c in user_calls} == {"501"}
    assert any("sysadminctl" in c for c in user_calls)


def test_macos_unmanaged(tmp_path):
    facts, _ = facts_for("macos/ventura_unmanaged", tmp_path)
    assert facts["disk_encryption"]["system_volume_encrypted"] is False
    assert facts["firewall"]["enabled"] is False
    assert facts["screen_lock"]["all_enabled"] is False
    assert facts["system_integrity"] == {"sip_enabled": False, "gatekeeper_enabled": False}
    assert facts["security_chip"]["present"] is False
    assert facts["auto_updates"]["enabled"] is False
    assert facts["management"]["mdm_enrolled"] is False
    assert facts["ssh_keys"]["unencrypted_count"] == 1


def test_windows_managed(tmp_path):
    facts, host = facts_for("windows/win11_managed", tmp_path)
    assert facts["os"]["version"] == "10.0.22631.4602"
    assert [v["mountpoint"] for v in facts["disk_encryption"]["volumes"]] == ["C:", "D:"]
    assert facts["disk_encryption"]["all_encrypted"] is True
    assert facts["firewall"]["enabled"] is True
    assert facts["firewall"]["default_inbound"] == "block"
    assert facts["management"]["azure_ad_joined"] is True
    assert facts["management"]["domain"] == "corp.example.com"
    assert facts["security_software"]["defender"]["realtime_enabled"] is True
    assert "Microsoft Defender for Endpoint" in facts["security_software"]["products"]
    assert facts["browsers"]["firefox"] == "133.0.3"
    assert facts["screen_lock"]["max_timeout_seconds"] == 600  # min(screensaver 600, limit 900)
    assert facts["ssh_keys"]["unencrypted_count"] == 1
    # One PowerShell start for the whole collection.
    assert sum(1 for c in host.runner.calls if c[0] == "powershell.exe") == 1


def test_windows_suspended_bitlocker_and_failed_sections(tmp_path):
    facts, _ = facts_for("windows/win10_unprotected", tmp_path)
    c = volume(facts, "C:")
    assert c["status"] == "FullyEncrypted" and c["encrypted"] is False  # protection suspended
    assert volume(facts, "E:")["role"] == "removable"
    assert facts["firewall"]["enabled"] is False  # the Public profile is off
    assert facts["auto_updates"]["enabled"] is False
    assert facts["screen_lock"]["all_enabled"] is False  # screen saver not secure
    assert facts["hardware"]["serial"] is None
    assert facts["hardware"]["hardware_uuid"] is None
    # A single-app list comes back from PowerShell as an object, not a list.
    assert facts["packages"]["installed"] == {"TeamViewer": "15.48.4"}
    # The TPM section failed: one error entry for that collector, its section null.
    assert facts["security_chip"] is None
    assert facts["errors"] == [
        {
            "collector": "security_chip",
            "error": "tpm: Get-Tpm : Access denied. The operation requires elevation.",
        }
    ]


def _with_command(host: Host, argv: list[str], result: CommandResult | None) -> Host:
    recordings = dict(host.runner._recordings)
    key = json.dumps(argv)
    if result is None:
        recordings[key] = CommandResult(tuple(argv), -9, "", "__timeout__")
    else:
        recordings[key] = result
    host.runner = RecordedRunner(recordings, host.runner._prefixes)
    return host


def test_a_hung_command_fails_only_its_collector(tmp_path):
    from agent.collectors.linux import LSBLK_COLUMNS

    host = recorded_host("linux/lvm_on_luks", tmp_path)
    _with_command(host, ["lsblk", "--json", "--output", LSBLK_COLUMNS], None)
    facts = collect_facts(host)
    assert facts["disk_encryption"] is None
    assert facts["errors"] == [
        {"collector": "disk_encryption", "error": "lsblk timed out after 3s"}
    ]
    assert facts["firewall"]["enabled"] is True
    assert validate_facts(facts) == []


def test_garbage_output_is_one_error_entry(tmp_path):
    host = recorded_host("linux/lvm_on_luks", tmp_path)
    _with_command(host, ["nft", "-j", "list", "ruleset"], CommandResult(("nft",), 0, "{not json"))
    facts = collect_facts(host)
    assert facts["firewall"] is None
    assert [e["collector"] for e in facts["errors"]] == ["firewall"]
    assert "invalid JSON" in facts["errors"][0]["error"]


def test_collectors_run_in_parallel_under_a_deadline():
    host = Host.local()
    release = threading.Event()

    def slow(_host):
        release.wait(60)  # still blocked when run_collectors must give up on it
        return "late"

    def boom(_host):
        raise RuntimeError("kaput")

    try:
        sections, errors = run_collectors(
            [
                Collector("a", slow),
                Collector("b", slow),
                Collector("c", boom),
                Collector("d", lambda h: 1),
            ],
            host,
            deadline=0.3,
        )
    finally:
        release.set()
    assert sections == {"a": None, "b": None, "c": None, "d": 1}
    assert {e["collector"]: e["error"] for e in errors} == {
        "a": "did not finish within 0.3s",
        "b": "did not finish within 0.3s",
        "c": "RuntimeError: kaput",
    }
