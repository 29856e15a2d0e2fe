"""Windows fact collectors: one PowerShell run (CIM, BitLocker, registry), parsed per section.

PowerShell costs a few hundred milliseconds to start, so every Windows fact
comes from a single run of :data:`PROBE_SCRIPT`, shared by all collectors of
one collection. The script is sent with ``-EncodedCommand`` (so no quoting
can mangle it), catches errors per section, casts enums to strings (Windows
PowerShell 5.1 would otherwise print them as numbers) and prints one JSON
object. A section that failed carries ``{"error": "..."}`` and turns into one
error entry for the collector that needed it.

Tested only on recorded outputs (``tests/fixtures/posture/windows``): there is
no Windows machine in CI.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from agent.collectors.base import Collector, CollectorError, Host
from agent.collectors.common import (
    LocalUser,
    bounded_packages,
    clean_dmi,
    collect_uptime,
    scan_ssh_keys,
)
from agent.collectors.common import collect_security_software as common_security_software

PROBE_SCRIPT = r"""
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Console]::OutputEncoding = [System.Text.Encoding]::UTF8
$r = [ordered]@{}
function S([string]$n, [scriptblock]$b) {
  try { $r[$n] = & $b } catch { $r[$n] = [ordered]@{ error = "$($_.Exception.Message)" } }
}
S 'os' {
  $o = Get-CimInstance Win32_OperatingSystem
  $cv = Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
  [ordered]@{ caption = "$($o.Caption)"; version = "$($o.Version)"; build = "$($o.BuildNumber)";
              ubr = $cv.UBR; display_version = "$($cv.DisplayVersion)" }
}
S 'hardware' {
  $p = Get-CimInstance Win32_ComputerSystemProduct
  $b = Get-CimInstance Win32_BIOS
  $c = Get-CimInstance Win32_ComputerSystem
  [ordered]@{ vendor = "$($p.Vendor)"; model = "$($p.Name)"; serial = "$($b.SerialNumber)";
              uuid = "$($p.UUID)"; domain = "$($c.Domain)"; part_of_domain = [bool]$c.PartOfDomain }
}
S 'bitlocker' {
  ,@(Get-BitLockerVolume | ForEach-Object {
    [ordered]@{ mount = "$($_.MountPoint)"; type = "$($_.VolumeType)"; status = "$($_.VolumeStatus)";
                protection = "$($_.ProtectionStatus)"; method = "$($_.EncryptionMethod)";
                percent = $_.EncryptionPercentage } })
}
S 'firewall' {
  ,@(Get-NetFirewallProfile | ForEach-Object {
    [ordered]@{ name = "$($_.Name)"; enabled = "$($_.Enabled)"; inbound = "$($_.DefaultInboundAction)" } })
}
S 'tpm' {
  $t = Get-Tpm
  $w = Get-CimInstance -Namespace 'root/cimv2/Security/MicrosoftTpm' -ClassName Win32_Tpm -ErrorAction SilentlyContinue
  [ordered]@{ present = [bool]$t.TpmPresent; ready = [bool]$t.TpmReady; spec = "$($w.SpecVersion)" }
}
S 'secure_boot' {
  try { [ordered]@{ supported = $true; enabled = [bool](Confirm-SecureBootUEFI) } }
  catch [System.PlatformNotSupportedException] { [ordered]@{ supported = $false; enabled = $false } }
}
S 'defender' {
  $m = Get-MpComputerStatus
  [ordered]@{ antivirus = [bool]$m.AntivirusEnabled; realtime = [bool]$m.RealTimeProtectionEnabled;
              signature_age = $m.AntivirusSignatureAge; mode = "$($m.AMRunningMode)" }
}
S 'updates' {
  $au = Get-ItemProperty 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU' -ErrorAction SilentlyContinue
  [ordered]@{ no_auto_update = $au.NoAutoUpdate; au_options = $au.AUOptions;
              service = "$((Get-Service wuauserv).StartType)" }
}
S 'console' {
  $c = Get-CimInstance Win32_ComputerSystem
  if (-not $c.UserName) { return $null }
  $nt = New-Object System.Security.Principal.NTAccount($c.UserName)
  $sid = $nt.Translate([System.Security.Principal.SecurityIdentifier]).Value
  $prof = Get-CimInstance Win32_UserProfile -Filter "SID='$sid'"
  $d = Get-ItemProperty "Registry::HKEY_USERS\$sid\Control Panel\Desktop" -ErrorAction SilentlyContinue
  $pd = Get-ItemProperty "Registry::HKEY_USERS\$sid\Software\Policies\Microsoft\Windows\Control Panel\Desktop" -ErrorAction SilentlyContinue
  $sys = Get-ItemProperty 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System' -ErrorAction SilentlyContinue
  [ordered]@{ user = "$($c.UserName)"; home = "$($prof.LocalPath)";
              active = $d.ScreenSaveActive; secure = $d.ScreenSaverIsSecure; timeout = $d.ScreenSaveTimeOut;
              policy_active = $pd.ScreenSaveActive; policy_secure = $pd.ScreenSaverIsSecure;
              policy_timeout = $pd.ScreenSaveTimeOut; inactivity_limit = $sys.InactivityTimeoutSecs }
}
S 'apps' {
  $keys = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\*',
          'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall\*'
  ,@(Get-ItemProperty $keys -ErrorAction SilentlyContinue | Where-Object { $_.DisplayName } |
     Select-Object -First 5000 | ForEach-Object { [ordered]@{ name = "$($_.DisplayName)"; version = "$($_.DisplayVersion)" } })
}
S 'mdm' {
  ,@(Get-ChildItem 'HKLM:\SOFTWARE\Microsoft\Enrollments' -ErrorAction SilentlyContinue |
     ForEach-Object { Get-ItemProperty $_.PSPath } |
     Where-Object { $_.ProviderID -and $_.EnrollmentState -eq 1 } | ForEach-Object { "$($_.ProviderID)" })
}
S 'dsreg' { (& dsregcmd.exe /status) -join "`n" }
$r | ConvertTo-Json -Depth 6 -Compress
"""  # noqa: E501 - PowerShell, kept readable

POWERSHELL_ARGV_PREFIX = (
    "powershell.exe",
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-EncodedCommand",
)
PROBE_TIMEOUT = 20.0


def probe_argv() -> list[str]:
    """The PowerShell command line that runs :data:`PROBE_SCRIPT`."""
    encoded = base64.b64encode(PROBE_SCRIPT.encode("utf-16-le")).decode("ascii")
    return [*POWERSHELL_ARGV_PREFIX, encoded]


def probe(host: Host) -> dict[str, Any]:
    """The probe's JSON output, run once per collection and shared."""

    def compute() -> dict[str, Any]:
        out = host.runner.run(probe_argv(), timeout=PROBE_TIMEOUT).check()
        try:
            data = json.loads(out.lstrip("\ufeff"))
        except ValueError as exc:
            raise CollectorError("PowerShell probe printed invalid JSON") from exc
        if not isinstance(data, dict):
            raise CollectorError("PowerShell probe printed no object")
        return data

    return host.shared("windows_probe", compute)


def section(host: Host, name: str, kind: type = dict) -> Any:
    """One probe section; raises CollectorError if that section failed."""
    value = probe(host).get(name)
    if isinstance(value, dict) and set(value) == {"error"}:
        raise CollectorError(f"{name}: {str(value['error'])[:200]}")
    if kind is list:
        if value is None:
            return []
        return value if isinstance(value, list) else [value]
    if kind is dict and value is not None and not isinstance(value, dict):
        raise CollectorError(f"{name}: unexpected shape")
    return value


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def collect_os(host: Host) -> dict[str, Any]:
    """Caption, version (with update build revision) and build."""
    s = section(host, "os") or {}
    version, build, ubr = _str(s.get("version")), _str(s.get("build")), s.get("ubr")
    if version and isinstance(ubr, int):
        version = f"{version}.{ubr}"
    return {
        "family": "windows",
        "name": _str(s.get("caption")),
        "version": version,
        "build": f"{build}.{ubr}" if build and isinstance(ubr, int) else build,
        "kernel": _str(s.get("version")),
        "distribution": None,
    }


def collect_hardware(host: Host) -> dict[str, Any]:
    """Win32_ComputerSystemProduct and Win32_BIOS."""
    s = section(host, "hardware") or {}
    uuid = clean_dmi(_str(s.get("uuid")))
    return {
        "vendor": clean_dmi(_str(s.get("vendor"))),
        "model": clean_dmi(_str(s.get("model"))),
        "serial": clean_dmi(_str(s.get("serial"))),
        "hardware_uuid": uuid.lower() if uuid else None,
    }


def collect_security_chip(host: Host) -> dict[str, Any]:
    """Get-Tpm, and the spec version from Win32_Tpm ("2.0, 0, 1.59")."""
    s = section(host, "tpm") or {}
    spec = _str(s.get("spec"))
    return {
        "kind": "tpm",
        "present": s.get("present") if isinstance(s.get("present"), bool) else None,
        "version": spec.split(",")[0].strip() if spec else None,
    }


def console_user(host: Host) -> LocalUser | None:
    """The interactive console user (Win32_ComputerSystem.UserName) and profile path."""
    s = section(host, "console")
    if not s or not _str(s.get("user")):
        return None
    name = str(s["user"])
    return LocalUser(name, None, _str(s.get("home")), "windows", True)


def collect_console_users(host: Host) -> list[str]:
    """DOMAIN\\user of the console session, if any."""
    user = console_user(host)
    return [user.name] if user else []


_ROLES = {"OperatingSystem": "system", "FixedData": "data", "Removable": "removable"}


def collect_disk_encryption(host: Host) -> dict[str, Any]:
    """BitLocker per volume: encrypted means fully encrypted and protection on."""
    volumes = []
    for v in section(host, "bitlocker", list):
        if not isinstance(v, dict):
            continue
        mount = _str(v.get("mount")) or "?"
        status = _str(v.get("status"))
        encrypted = status == "FullyEncrypted" and v.get("protection") == "On"
        volumes.append(
            {
                "mountpoint": mount,
                "mountpoints": [mount],
                "device": None,
                "fstype": None,
                "role": _ROLES.get(str(v.get("type")), "data"),
                "encrypted": encrypted,
                "method": "bitlocker" if status and status != "FullyDecrypted" else None,
                "cipher": _str(v.get("method")) if v.get("method") != "None" else None,
                "status": status,
                "layers": None,
            }
        )
    system = [v for v in volumes if v["role"] == "system"]
    relevant = [v["encrypted"] for v in volumes if v["role"] in ("system", "data")]
    return {
        "system_volume_encrypted": system[0]["encrypted"] if system else None,
        "all_encrypted": all(relevant) if relevant else None,
        "volumes": volumes,
    }


def collect_firewall(host: Host) -> dict[str, Any]:
    """Windows Defender Firewall profiles: on only if every profile is on."""
    products = []
    for p in section(host, "firewall", list):
        if not isinstance(p, dict):
            continue
        enabled = p.get("enabled") == "True"
        inbound = p.get("inbound")
        products.append(
            {
                "name": f"windows-firewall-{str(p.get('name') or '?').lower()}",
                "enabled": enabled,
                # NotConfigured falls back to the built-in default, which is Block.
                "default_inbound": "allow" if inbound == "Allow" else "block",
            }
        )
    if not products:
        return {"enabled": None, "default_inbound": None, "products": []}
    enabled = all(p["enabled"] for p in products)
    block = enabled and all(p["default_inbound"] == "block" for p in products)
    return {
        "enabled": enabled,
        "default_inbound": "block" if block else "allow",
        "products": products,
    }


def _reg_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def windows_screen_lock(s: dict[str, Any]) -> dict[str, Any]:
    """Machine inactivity limit, or a password-protected screen saver (policy wins)."""
    limit = _reg_int(s.get("inactivity_limit"))
    active = _reg_int(s.get("policy_active"))
    active = _reg_int(s.get("active")) if active is None else active
    secure = _reg_int(s.get("policy_secure"))
    secure = _reg_int(s.get("secure")) if secure is None else secure
    timeout = _reg_int(s.get("policy_timeout"))
    timeout = _reg_int(s.get("timeout")) if timeout is None else timeout
    candidates = []
    if limit:
        candidates.append(limit)
    if active == 1 and secure == 1 and timeout:
        candidates.append(timeout)
    enabled = bool(candidates)
    return {
        "source": "registry",
        "enabled": enabled,
        "timeout_seconds": min(candidates) if candidates else None,
        "idle_seconds": min(candidates) if candidates else None,
        "delay_seconds": 0 if candidates else None,
    }


def collect_screen_lock(host: Host) -> dict[str, Any]:
    """Screen lock of the console user, from their registry hive and machine policy."""
    s = section(host, "console")
    if not s or not _str(s.get("user")):
        return {"all_enabled": None, "max_timeout_seconds": None, "users": []}
    entry = {"user": str(s["user"]), **windows_screen_lock(s)}
    return {
        "all_enabled": entry["enabled"],
        "max_timeout_seconds": entry["timeout_seconds"],
        "users": [entry],
    }


def collect_auto_updates(host: Host) -> dict[str, Any]:
    """Windows Update: off if the service is disabled or policy sets NoAutoUpdate=1."""
    s = section(host, "updates") or {}
    no_auto = _reg_int(s.get("no_auto_update")) == 1
    options = _reg_int(s.get("au_options"))
    service_on = s.get("service") != "Disabled"
    check = service_on and not no_auto
    return {
        "enabled": check and options != 2,  # 2 = notify before download
        "mechanism": "windows-update",
        "check_enabled": check,
        "install_enabled": check and options in (None, 4),
    }


def collect_secure_boot(host: Host) -> dict[str, Any]:
    """Confirm-SecureBootUEFI (legacy BIOS: not supported)."""
    s = section(host, "secure_boot") or {}
    return {
        "supported": s.get("supported") if isinstance(s.get("supported"), bool) else None,
        "enabled": s.get("enabled") if isinstance(s.get("enabled"), bool) else None,
    }


def collect_system_integrity(host: Host) -> dict[str, Any]:
    """SIP and Gatekeeper are macOS features: null on Windows."""
    return {"sip_enabled": None, "gatekeeper_enabled": None}


def collect_management(host: Host) -> dict[str, Any]:
    """AD domain (Win32_ComputerSystem), Entra ID join (dsregcmd) and MDM enrollments."""
    hw = section(host, "hardware") or {}
    providers = [p for p in section(host, "mdm", list) if isinstance(p, str)]
    dsreg = probe(host).get("dsreg")
    azure = None
    if isinstance(dsreg, str):
        match = re.search(r"AzureAdJoined\s*:\s*(YES|NO)", dsreg)
        azure = match.group(1) == "YES" if match else None
    joined = hw.get("part_of_domain") if isinstance(hw.get("part_of_domain"), bool) else None
    return {
        "mdm_enrolled": bool(providers),
        "mdm_provider": providers[0] if providers else None,
        "domain_joined": joined,
        "domain": _str(hw.get("domain")) if joined else None,
        "azure_ad_joined": azure,
    }


def collect_security_software(host: Host) -> dict[str, Any]:
    """Known EDR/AV processes, plus Microsoft Defender's own status."""
    facts = common_security_software(host)
    try:
        d = section(host, "defender")
    except CollectorError:
        d = None
    if d:
        age = d.get("signature_age")
        facts["defender"] = {
            "antivirus_enabled": d.get("antivirus")
            if isinstance(d.get("antivirus"), bool)
            else None,
            "realtime_enabled": d.get("realtime") if isinstance(d.get("realtime"), bool) else None,
            "signature_age_days": age if isinstance(age, int) and age < 4000 else None,
        }
        if facts["defender"]["realtime_enabled"] and d.get("mode") == "Normal":
            facts["av_running"] = facts["running"] = True
            if "Microsoft Defender Antivirus" not in facts["products"]:
                facts["products"] = sorted([*facts["products"], "Microsoft Defender Antivirus"])
    return facts


def collect_packages(host: Host) -> dict[str, Any]:
    """Uninstall registry entries (64- and 32-bit): DisplayName -> DisplayVersion."""
    items = [
        (str(a.get("name") or ""), str(a.get("version") or ""))
        for a in section(host, "apps", list)
        if isinstance(a, dict)
    ]
    return bounded_packages("registry", items, 5000)


def collect_ssh_keys(host: Host) -> dict[str, Any]:
    """Private keys without a passphrase in the console user's %USERPROFILE%\\.ssh."""
    user = console_user(host)
    return scan_ssh_keys(host, [user] if user else [], sep="\\")


def collectors() -> list[Collector]:
    """The Windows collectors, in fact-document order."""
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
