"""macOS fact collectors: sw_vers, ioreg, fdesetup, socketfilterfw, sysadminctl, plists.

Tested only on recorded command outputs (``tests/fixtures/posture/macos``):
there is no Mac in CI. Screen lock cannot be read as root (fleet #8875,
launcher #614): ``sysadminctl -screenLock status`` and the screensaver idle
time are read in the console user's own context through
``launchctl asuser UID sudo -u USER``. Software-update settings and app
versions are plists read directly (plistlib), which spawns no process.
"""

from __future__ import annotations

import plistlib
import re
from typing import Any
from urllib.parse import urlsplit

from agent.collectors.base import Collector, CollectorError, Host
from agent.collectors.common import (
    LocalUser,
    bounded_packages,
    collect_security_software,
    collect_uptime,
    scan_ssh_keys,
)


def parse_colon_lines(text: str) -> dict[str, str]:
    """``Key: value`` lines (sw_vers, profiles) into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def collect_os(host: Host) -> dict[str, Any]:
    """Product name, version and build from ``sw_vers``."""
    info = parse_colon_lines(host.runner.run(["sw_vers"]).check())
    return {
        "family": "macos",
        "name": info.get("ProductName") or None,
        "version": info.get("ProductVersion") or None,
        "build": info.get("BuildVersion") or None,
        "kernel": host.kernel or None,
        "distribution": None,
    }


def parse_ioreg_properties(text: str) -> dict[str, str]:
    """``"key" = "value"`` and ``"key" = <"value">`` lines of ``ioreg -rd1``."""
    out: dict[str, str] = {}
    for match in re.finditer(r'^\s*"([^"]+)" = <?"([^"]*)">?\s*$', text, re.M):
        out[match.group(1)] = match.group(2)
    return out


def collect_hardware(host: Host) -> dict[str, Any]:
    """Serial, hardware UUID and model of the platform expert device."""
    props = parse_ioreg_properties(
        host.runner.run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]).check()
    )
    return {
        "vendor": props.get("manufacturer") or "Apple Inc.",
        "model": props.get("model") or None,
        "serial": props.get("IOPlatformSerialNumber") or None,
        "hardware_uuid": (props.get("IOPlatformUUID") or "").lower() or None,
    }


def collect_security_chip(host: Host) -> dict[str, Any]:
    """Secure Enclave (T2 or Apple silicon): an AppleSEPManager in the IORegistry."""
    result = host.runner.run(["ioreg", "-w", "0", "-c", "AppleSEPManager"])
    present = "AppleSEPManager" in result.stdout
    return {"kind": "secure_enclave", "present": present, "version": None}


def console_user(host: Host) -> LocalUser | None:
    """The user at the console (``stat /dev/console``); None at the login window."""

    def compute() -> LocalUser | None:
        out = host.runner.run(["stat", "-f", "%Su %u", "/dev/console"]).check().split()
        if len(out) != 2 or out[0] in ("root", "_mbsetupuser", "loginwindow"):
            return None
        name, uid = out[0], int(out[1]) if out[1].isdigit() else None
        return LocalUser(name, uid, f"/Users/{name}", "aqua", True)

    return host.shared("console_user", compute)


def _as_user(host: Host, user: LocalUser, argv: list[str]) -> list[str]:
    if host.euid == user.uid or not host.is_root:
        return argv
    return ["launchctl", "asuser", str(user.uid), "sudo", "-u", user.name, "--", *argv]


def collect_console_users(host: Host) -> list[str]:
    """The console user's name, if someone is logged in."""
    user = console_user(host)
    return [user.name] if user else []


def parse_fdesetup(text: str) -> dict[str, Any]:
    """FileVault state from ``fdesetup status``."""
    if "FileVault is On" in text:
        status = "on"
    elif "FileVault is Off" in text:
        status = "off"
    else:
        status = None
    if "Encryption in progress" in text:
        status = "encrypting"
    elif "Decryption in progress" in text:
        status = "decrypting"
    if status is None:
        raise CollectorError("fdesetup status printed nothing recognisable")
    return {"status": status, "encrypted": status == "on"}


def collect_disk_encryption(host: Host) -> dict[str, Any]:
    """FileVault protects the system (and Data) volume as a whole."""
    state = parse_fdesetup(host.runner.run(["fdesetup", "status"]).check())
    volume = {
        "mountpoint": "/",
        "mountpoints": ["/", "/System/Volumes/Data"],
        "device": None,
        "fstype": "apfs",
        "role": "system",
        "encrypted": state["encrypted"],
        "method": "filevault",
        "cipher": None,
        "status": state["status"],
        "layers": None,
    }
    return {
        "system_volume_encrypted": state["encrypted"],
        "all_encrypted": state["encrypted"],
        "volumes": [volume],
    }


SOCKETFILTERFW = "/usr/libexec/ApplicationFirewall/socketfilterfw"


def collect_firewall(host: Host) -> dict[str, Any]:
    """Application Layer Firewall: global state and block-all mode."""
    state = host.runner.run([SOCKETFILTERFW, "--getglobalstate"]).check()
    match = re.search(r"State = (\d)", state)
    if match:
        enabled = match.group(1) in ("1", "2")
    elif "enabled" in state.lower():
        enabled = True
    elif "disabled" in state.lower():
        enabled = False
    else:
        raise CollectorError("socketfilterfw printed nothing recognisable")
    block_all = host.runner.run([SOCKETFILTERFW, "--getblockall"])
    blocks = (match is not None and match.group(1) == "2") or (
        block_all.ok and bool(re.search(r"block all\b.*\benabled", block_all.stdout, re.I))
    )
    inbound = "block" if enabled and blocks else ("allow" if not enabled else None)
    return {
        "enabled": enabled,
        "default_inbound": inbound,
        "products": [{"name": "alf", "enabled": enabled, "default_inbound": inbound}],
    }


def parse_sysadminctl_screenlock(text: str) -> int | None | bool:
    """Seconds from screensaver/display sleep to lock; False if off; None if unknown."""
    if re.search(r"screenLock is off", text):
        return False
    if re.search(r"screenLock delay is immediate", text):
        return 0
    match = re.search(r"screenLock delay is (\d+) seconds", text)
    return int(match.group(1)) if match else None


def parse_pmset_displaysleep(text: str) -> int | None:
    """Display sleep in minutes from ``pmset -g`` (0 means never)."""
    match = re.search(r"^\s*displaysleep\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else None


def collect_screen_lock(host: Host) -> dict[str, Any]:
    """Lock after the screensaver starts or the display sleeps, read as the console user."""
    user = console_user(host)
    if user is None:
        return {"all_enabled": None, "max_timeout_seconds": None, "users": []}
    status = host.runner.run(_as_user(host, user, ["sysadminctl", "-screenLock", "status"]))
    delay = parse_sysadminctl_screenlock(status.stderr + "\n" + status.stdout)
    idle_out = host.runner.run(
        _as_user(
            host, user, ["defaults", "-currentHost", "read", "com.apple.screensaver", "idleTime"]
        )
    )
    idle_time = (
        int(idle_out.stdout.strip()) if idle_out.ok and idle_out.stdout.strip().isdigit() else 1200
    )
    display = parse_pmset_displaysleep(host.runner.run(["pmset", "-g"]).stdout)
    candidates = [t for t in (idle_time, (display or 0) * 60) if t > 0]
    idle = min(candidates) if candidates else 0
    if delay is None:
        enabled: bool | None = None
    else:
        enabled = delay is not False and idle > 0
    timeout = idle + delay if enabled and isinstance(delay, int) else None
    entry = {
        "user": user.name,
        "source": "sysadminctl",
        "enabled": enabled,
        "timeout_seconds": timeout,
        "idle_seconds": idle,
        "delay_seconds": delay if isinstance(delay, int) and delay is not False else None,
    }
    return {
        "all_enabled": enabled,
        "max_timeout_seconds": timeout,
        "users": [entry],
    }


def _read_plist(host: Host, path: str) -> dict[str, Any]:
    data = host.files.read_bytes(path, 1024 * 1024)
    if not data:
        return {}
    try:
        value = plistlib.loads(data)
    except Exception:  # plistlib raises several unrelated types on bad input
        return {}
    return value if isinstance(value, dict) else {}


def collect_auto_updates(host: Host) -> dict[str, Any]:
    """Software Update preferences; managed (MDM) preferences win over local ones.

    Unset keys take Apple's defaults: checking, downloading and security
    responses on, installing macOS updates off.
    """
    prefs = _read_plist(host, "/Library/Preferences/com.apple.SoftwareUpdate.plist")
    prefs.update(_read_plist(host, "/Library/Managed Preferences/com.apple.SoftwareUpdate.plist"))

    def flag(key: str, default: bool) -> bool:
        value = prefs.get(key, default)
        return bool(value) if isinstance(value, (bool, int)) else default

    check = flag("AutomaticCheckEnabled", True)
    download = flag("AutomaticDownload", True)
    critical = flag("CriticalUpdateInstall", True)
    install = flag("AutomaticallyInstallMacOSUpdates", False)
    return {
        "enabled": check and download and critical,
        "mechanism": "softwareupdate",
        "check_enabled": check,
        "install_enabled": install,
    }


def collect_secure_boot(host: Host) -> dict[str, Any]:
    """Apple silicon always boots securely; the policy level is not readable without auth."""
    if host.machine == "arm64":
        return {"supported": True, "enabled": None}
    return {"supported": None, "enabled": None}


def collect_system_integrity(host: Host) -> dict[str, Any]:
    """SIP (``csrutil status``) and Gatekeeper (``spctl --status``)."""
    csr = host.runner.run(["csrutil", "status"]).stdout
    sip = None
    match = re.search(r"System Integrity Protection status:\s*(enabled|disabled)", csr)
    if match:
        sip = match.group(1) == "enabled"
    spctl = host.runner.run(["spctl", "--status"])
    text = spctl.stdout + spctl.stderr
    gatekeeper = True if "assessments enabled" in text else False if "disabled" in text else None
    return {"sip_enabled": sip, "gatekeeper_enabled": gatekeeper}


def collect_management(host: Host) -> dict[str, Any]:
    """MDM enrollment (``profiles status -type enrollment``) and AD binding (``dsconfigad``)."""
    profiles = parse_colon_lines(
        host.runner.run(["profiles", "status", "-type", "enrollment"]).check()
    )
    mdm = profiles.get("MDM enrollment", "")
    enrolled = None if not mdm else mdm.lower().startswith("yes")
    server = urlsplit(profiles.get("MDM server") or "").hostname
    domain = None
    ad = host.runner.run(["dsconfigad", "-show"])
    if ad.ok:
        match = re.search(r"Active Directory Domain\s*=\s*(\S+)", ad.stdout)
        domain = match.group(1) if match else None
    return {
        "mdm_enrolled": enrolled,
        "mdm_provider": server or None,
        "domain_joined": domain is not None,
        "domain": domain,
        "azure_ad_joined": None,
    }


MAX_APPS = 2000


def collect_packages(host: Host) -> dict[str, Any]:
    """Apps in /Applications: bundle name -> CFBundleShortVersionString."""
    items = []
    for entry in host.files.listdir("/Applications")[:MAX_APPS]:
        if not entry.endswith(".app"):
            continue
        info = _read_plist(host, f"/Applications/{entry}/Contents/Info.plist")
        name = entry[: -len(".app")]
        version = info.get("CFBundleShortVersionString") or info.get("CFBundleVersion") or ""
        items.append((name, str(version)))
    return bounded_packages("applications", items, MAX_APPS)


def collect_ssh_keys(host: Host) -> dict[str, Any]:
    """Private keys without a passphrase in the console user's ~/.ssh."""
    user = console_user(host)
    return scan_ssh_keys(host, [user] if user else [])


def collectors() -> list[Collector]:
    """The macOS collectors, in fact-document order."""
    return [
        Collector("os", collect_os),
        Collector("hardware", collect_hardware),
        Collector("security_chip", collect_security_chip),
        Collector("console_users", collect_console_users),
        Collector("disk_encryption", collect_disk_encryption),
        Collector("firewall", collect_firewall),
        Collector("screen_lock", collect_screen_lock),
        Collector("auto_updates", collect_auto_updates),
        Collector("secure_boot", collect_secure_boot),
        Collector("system_integrity", collect_system_integrity),
        Collector("management", collect_management),
        Collector("security_software", collect_security_software),
        Collector("packages", collect_packages),
        Collector("ssh_keys", collect_ssh_keys),
        Collector("uptime_seconds", collect_uptime),
    ]
