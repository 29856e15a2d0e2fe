"""Desktop notifications behind one interface, one command per OS.

* Linux: ``notify-send`` (libnotify), when it is installed and a session bus
  exists (``DBUS_SESSION_BUS_ADDRESS``, or ``$XDG_RUNTIME_DIR/bus``).
* macOS: ``osascript -e 'display notification ...'``.
* Windows: a PowerShell toast through the WinRT ``ToastNotificationManager``.

When the tool is missing the notification is skipped and that is logged at
info. The text is passed as arguments (never through a shell); what a
notification says (it may hold a code) is never logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Runner = Callable[[list[str]], None]


def _applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ps_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _xml_text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def command_for(
    platform: str,
    title: str,
    body: str,
    *,
    which: Callable[[str], str | None] = shutil.which,
    env: Mapping[str, str] | None = None,
) -> list[str] | None:
    """The argv that shows a notification on ``platform``, or None when it has no way to."""
    env = os.environ if env is None else env
    if platform.startswith("linux"):
        tool = which("notify-send")
        runtime = env.get("XDG_RUNTIME_DIR")
        has_bus = bool(env.get("DBUS_SESSION_BUS_ADDRESS")) or bool(
            runtime and (Path(runtime) / "bus").exists()
        )
        if tool is None or not has_bus:
            return None
        return [tool, "--app-name=devicetrust", "--urgency=normal", title, body]
    if platform == "darwin":
        tool = which("osascript")
        if tool is None:
            return None
        script = (
            f"display notification {_applescript_string(body)} "
            f"with title {_applescript_string(title)}"
        )
        return [tool, "-e", script]
    if platform == "win32":
        tool = which("powershell") or which("powershell.exe")
        if tool is None:
            return None
        xml = (
            "<toast><visual><binding template='ToastGeneric'>"
            f"<text>{_xml_text(title)}</text><text>{_xml_text(body)}</text>"
            "</binding></visual></toast>"
        )
        script = (
            "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, "
            "ContentType=WindowsRuntime] > $null; "
            "[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, "
            "ContentType=WindowsRuntime] > $null; "
            "$x = New-Object Windows.Data.Xml.Dom.XmlDocument; "
            f"$x.LoadXml({_ps_string(xml)}); "
            "$t = [Windows.UI.Notifications.ToastNotification]::new($x); "
            "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
            "'devicetrust').Show($t)"
        )
        return [tool, "-NoProfile", "-NonInteractive", "-Command", script]
    return None


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=False, timeout=10, capture_output=True)  # noqa: S603 - no shell


class Notifier:
    """Shows desktop notifications on this OS, or skips them quietly."""

    def __init__(self, platform: str = sys.platform, runner: Runner = _run) -> None:
        self.platform = platform
        self.runner = runner

    def notify(self, title: str, body: str) -> bool:
        """Show one notification; False when this desktop has no way to (logged at info)."""
        argv = command_for(self.platform, title, body)
        if argv is None:
            log.info(
                "no desktop notifications here (%s); see devicetrust-agent approve", self.platform
            )
            return False
        try:
            self.runner(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("desktop notification failed: %s", type(exc).__name__)
            return False
        return True
