"""The macOS package definition (packaging/macos), checked as far as Linux allows.

Every property list parses with plistlib; the LaunchDaemon and LaunchAgent run
the installed executable with the right subcommands and labels; the payload is
staged with the modes the package declares; distribution.xml is parsed with
lxml and its references resolve; the configuration profile writes the
preference domain the agent reads. The flat .pkg itself is not built here:
pkgbuild and productbuild run on macOS only, and Debian packages neither mkbom
nor xar (docs/rollout.md says what remains unproven).
"""

from __future__ import annotations

import plistlib
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lxml import etree

from agent import config, paths

ROOT = Path(__file__).resolve().parents[2]
MAC = ROOT / "packaging/macos"
DAEMON = MAC / "root/Library/LaunchDaemons/com.devicetrust.agent.plist"
HELPER = MAC / "root/Library/LaunchAgents/com.devicetrust.agent.user-helper.plist"
PROFILE = MAC / "com.devicetrust.agent.mobileconfig"
EXE = "/usr/local/devicetrust/bin/devicetrust-agent"


def load(path):
    with path.open("rb") as fh:
        return plistlib.load(fh)


def test_every_plist_parses():
    found = [*MAC.rglob("*.plist"), *MAC.rglob("*.mobileconfig")]
    assert len(found) == 3
    for path in found:
        assert isinstance(load(path), dict), path


def test_launch_daemon_runs_the_agent_as_root_and_keeps_it_up(monkeypatch):
    daemon = load(DAEMON)
    assert daemon["Label"] == DAEMON.stem == "com.devicetrust.agent"
    assert daemon["ProgramArguments"] == [EXE, "run"]
    assert daemon["RunAtLoad"] is True and daemon["KeepAlive"] is True
    assert daemon["ThrottleInterval"] >= 10  # a broken config is retried, not spun on
    assert "UserName" not in daemon  # root: the collectors read system state
    assert daemon["Umask"] == 0o077
    # Its working directory is the state directory the agent uses as root on macOS.
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(paths.os, "geteuid", lambda: 0)
    monkeypatch.delenv("DEVICETRUST_AGENT_STATE_DIR", raising=False)
    assert daemon["WorkingDirectory"] == str(paths.default_state_dir())
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert daemon[key].startswith("/Library/Logs/devicetrust/")


def test_launch_agent_runs_the_user_helper_in_each_gui_session():
    helper = load(HELPER)
    assert helper["Label"] == HELPER.stem == "com.devicetrust.agent.user-helper"
    assert helper["ProgramArguments"] == [EXE, "user-helper"]
    assert helper["LimitLoadToSessionType"] == ["Aqua"]
    assert helper["RunAtLoad"] is True and helper["KeepAlive"] is True
    assert "UserName" not in helper  # as the logged-in user, whose screen lock it reads


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("macos")
    exe = tmp / "devicetrust-agent"
    exe.write_text("#!/bin/sh\n")
    out = tmp / "out"
    r = subprocess.run(
        [sys.executable, str(MAC / "build.py"), "--executable", str(exe), "--version", "1.2.3",
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Debian packages neither mkbom (bomutils) nor xar" in r.stdout
    return out


def test_payload_modes(staged):
    root = staged / "root"
    listed = {
        line.split(" ", 2)[2]: (line[0], int(line.split(" ")[1], 8))
        for line in (staged / "payload.txt").read_text().splitlines()
    }
    assert listed["/Library/LaunchDaemons/com.devicetrust.agent.plist"] == ("f", 0o644)
    assert listed["/Library/LaunchAgents/com.devicetrust.agent.user-helper.plist"] == ("f", 0o644)
    assert listed[EXE] == ("f", 0o755)
    assert listed["/usr/local/devicetrust/bin/devicetrust-uninstall"] == ("f", 0o755)
    assert listed["/Library/Application Support/devicetrust/agent.toml.example"] == ("f", 0o644)
    # No agent.toml (the admin's, kept across upgrades), no state directory (postinstall's, 0700).
    assert "/Library/Application Support/devicetrust/agent.toml" not in listed
    assert "/Library/Application Support/devicetrust/agent" not in listed
    for path, (_, mode) in listed.items():
        assert not mode & 0o022, path  # nothing group- or world-writable
        actual = stat.S_IMODE((root / path.lstrip("/")).lstat().st_mode)
        assert actual == mode, path
    # The launchd jobs' program is in the payload.
    for job in (DAEMON, HELPER):
        assert load(job)["ProgramArguments"][0] in listed


def test_scripts_are_shell_and_set_up_state_and_jobs(staged):
    for name in ("preinstall", "postinstall"):
        script = staged / "scripts" / name
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        subprocess.run(["sh", "-n", str(script)], check=True)
    post = (staged / "scripts/postinstall").read_text()
    assert '/bin/chmod 0700 "$SUPPORT/agent"' in post
    assert 'launchctl bootstrap system "$DAEMON"' in post
    assert 'launchctl bootstrap "gui/$uid" "$HELPER"' in post
    assert post.rstrip().endswith("exit 0")  # a failed start does not fail the package
    pre = (staged / "scripts/preinstall").read_text()
    assert "launchctl bootout system/com.devicetrust.agent" in pre
    assert "rm " not in pre  # an upgrade deletes nothing: keys and enrollment stay
    subprocess.run(
        ["sh", "-n", str(staged / "root/usr/local/devicetrust/bin/devicetrust-uninstall")],
        check=True,
    )


def test_distribution_xml(staged):
    doc = etree.parse(str(staged / "distribution.xml"))
    gui = doc.getroot()
    assert gui.tag == "installer-gui-script" and gui.get("minSpecVersion") == "2"
    options = gui.find("options")
    assert options.get("customize") == "never"
    assert set(options.get("hostArchitectures").split(",")) == {"arm64", "x86_64"}
    domains = gui.find("domains")
    assert domains.attrib == {
        "enable_anywhere": "false",
        "enable_currentUserHome": "false",
        "enable_localSystem": "true",
    }
    choices = {c.get("id") for c in gui.findall("choice")}
    assert {line.get("choice") for line in gui.iter("line")} <= choices
    refs = gui.findall("pkg-ref")
    chosen = {r.get("id") for c in gui.findall("choice") for r in c.findall("pkg-ref")}
    (package,) = [r for r in refs if r.text]
    assert package.get("id") == "com.devicetrust.agent" and package.get("id") in chosen
    assert package.get("version") == "1.2.3"
    assert package.text == "devicetrust-agent-component.pkg"
    assert (staged / "resources" / gui.find("welcome").get("file")).exists()
    assert gui.find("allowed-os-versions/os-version").get("min") == "12.0"


def test_profile_writes_the_preference_domain_the_agent_reads():
    profile = load(PROFILE)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    assert profile["PayloadScope"] == "System"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.ManagedClient.preferences"
    uuids = [profile["PayloadUUID"], payload["PayloadUUID"]]
    assert all(str(uuid.UUID(u)).upper() == u for u in uuids) and len(set(uuids)) == 2
    assert payload["PayloadIdentifier"].startswith(profile["PayloadIdentifier"] + ".")
    (domain,) = payload["PayloadContent"]
    assert domain == config.MAC_DOMAIN
    assert config.MAC_MANAGED_PLIST.name == domain + ".plist"
    settings = payload["PayloadContent"][domain]["Forced"][0]["mcx_preference_settings"]
    assert set(settings) == {"service_url", "server_key_fingerprint"}


def run_make_profile(*args):
    return subprocess.run(
        [sys.executable, str(MAC / "make_profile.py"), *args],
        capture_output=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_make_profile_fills_values_with_fresh_uuids_and_checks_them(tmp_path):
    fp = "SHA256:" + "A" * 43
    first = run_make_profile("https://signin.example.com", fp, "--report-interval", "15 min")
    second = run_make_profile("https://signin.example.com", fp)
    assert first.returncode == 0, first.stderr
    one, two, template = plistlib.loads(first.stdout), plistlib.loads(second.stdout), load(PROFILE)
    ids = {p["PayloadUUID"] for p in (one, one["PayloadContent"][0], two, template)}
    assert len(ids) == 4
    settings = one["PayloadContent"][0]["PayloadContent"][config.MAC_DOMAIN]["Forced"][0][
        "mcx_preference_settings"
    ]
    assert settings == {
        "service_url": "https://signin.example.com",
        "server_key_fingerprint": fp,
        "report_interval": "15 min",
    }
    # What the Mac would store from it reads back through the agent's own source.
    stored = tmp_path / "com.devicetrust.agent.plist"
    stored.write_bytes(plistlib.dumps(settings, fmt=plistlib.FMT_BINARY))
    cfg = config.merge([config.PlistSource(stored)])
    assert (cfg.service_url, cfg.server_key_fingerprint, cfg.report_interval) == (
        "https://signin.example.com",
        fp,
        900,
    )
    bad = run_make_profile("http://signin.example.com", fp)
    assert bad.returncode != 0 and b"service_url" in bad.stderr and not bad.stdout
