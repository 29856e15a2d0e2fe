"""Platform identifiers sent in every response: hardware UUID, serial, OS and hostname.

They let the service notice clones (one key, other hardware) and re-installs
(same hardware, new key). ``DEVICETRUST_AGENT_HARDWARE_UUID`` and
``DEVICETRUST_AGENT_SERIAL`` override them, for virtual machines without DMI
data and for tests that run several devices on one machine.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
from pathlib import Path


def _read(path: str) -> str | None:
    try:
        value = Path(path).read_text().strip()
    except OSError:
        return None
    return value or None


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _macos_ids() -> tuple[str | None, str | None]:
    out = _run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"])
    found: dict[str, str] = {}
    for line in out.splitlines():
        for key in ("IOPlatformUUID", "IOPlatformSerialNumber"):
            if f'"{key}"' in line and "=" in line:
                found[key] = line.split("=", 1)[1].strip().strip('"')
    return found.get("IOPlatformUUID"), found.get("IOPlatformSerialNumber")


def _windows_ids() -> tuple[str | None, str | None]:
    ps = (
        "Get-CimInstance Win32_ComputerSystemProduct"
        " | Select-Object UUID,IdentifyingNumber | ConvertTo-Json"
    )
    out = _run(["powershell", "-NoProfile", "-Command", ps])

    try:
        data = json.loads(out)
    except ValueError:
        return None, None
    if not isinstance(data, dict):  # null (no object) or an array (several): not one machine
        return None, None
    return data.get("UUID"), data.get("IdentifyingNumber")


@functools.lru_cache(maxsize=1)
def hardware_ids() -> tuple[str | None, str | None]:
    """``(hardware_uuid, serial)`` of this machine, best effort."""
    uuid_override = os.environ.get("DEVICETRUST_AGENT_HARDWARE_UUID")
    serial_override = os.environ.get("DEVICETRUST_AGENT_SERIAL")
    if sys.platform == "darwin":
        hw_uuid, serial = _macos_ids()
    elif sys.platform == "win32":
        hw_uuid, serial = _windows_ids()
    else:
        hw_uuid = _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id")
        serial = _read("/sys/class/dmi/id/product_serial")
    return uuid_override or hw_uuid, serial_override or serial


# This process's random instance id, sent as ``platform.instance`` in every response: the
# service notices two agents answering for one device when answers alternate between
# instances (a restart changes it once; a copied agent running elsewhere flips back and forth).
INSTANCE = secrets.token_hex(8)


def platform_json() -> dict[str, str]:
    """The ``platform`` object of a response body."""
    hw_uuid, serial = hardware_ids()
    return {
        "hardware_uuid": hw_uuid or "",
        "serial": serial or "",
        "os": {"darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform),
        "os_version": platform.release(),
        "hostname": socket.gethostname(),
        "instance": INSTANCE,
    }
