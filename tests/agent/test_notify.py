"""Desktop notifications (agent/notify.py): each OS's command line, and a real notify-send.

The macOS and Windows command lines are checked as argv without running them;
on Linux a fake ``notify-send`` script on PATH records what it was given, a real
process boundary.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from agent.notify import Notifier, command_for

TITLE = "A new device wants to join"
BODY = 'desk "02": enter code K7QM-W3XP; it\'s $(rm -rf) `x`'


def _which(found: set[str]):
    return lambda name: f"/usr/bin/{name}" if name in found else None


def test_linux_needs_the_tool_and_a_session_bus(tmp_path):
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus"}
    argv = command_for("linux", TITLE, BODY, which=_which({"notify-send"}), env=env)
    assert argv == [
        "/usr/bin/notify-send",
        "--app-name=devicetrust",
        "--urgency=normal",
        TITLE,
        BODY,
    ]
    assert command_for("linux", TITLE, BODY, which=_which(set()), env=env) is None
    assert command_for("linux", TITLE, BODY, which=_which({"notify-send"}), env={}) is None
    (tmp_path / "bus").touch()
    runtime = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert command_for("linux", TITLE, BODY, which=_which({"notify-send"}), env=runtime)


def test_macos_osascript_quotes_the_text():
    argv = command_for("darwin", TITLE, BODY, which=_which({"osascript"}), env={})
    assert argv[:2] == ["/usr/bin/osascript", "-e"]
    assert argv[2] == (
        'display notification "desk \\"02\\": enter code K7QM-W3XP; it\'s $(rm -rf) `x`" '
        'with title "A new device wants to join"'
    )
    assert command_for("darwin", TITLE, BODY, which=_which(set()), env={}) is None


def test_windows_powershell_toast_quotes_the_text():
    argv = command_for("win32", TITLE, BODY, which=_which({"powershell"}), env={})
    assert argv[:4] == ["/usr/bin/powershell", "-NoProfile", "-NonInteractive", "-Command"]
    script = argv[4]
    assert "ToastNotificationManager" in script and "CreateToastNotifier('devicetrust')" in script
    # XML-escaped inside a single-quoted PowerShell string (quotes doubled).
    assert "<text>desk &quot;02&quot;: enter code K7QM-W3XP; it''s $(rm -rf) `x`</text>" in script
    assert command_for("freebsd", TITLE, BODY, which=_which({"notify-send"}), env={}) is None


def test_notifier_records_argv_and_skips_quietly(caplog):
    ran: list[list[str]] = []
    caplog.set_level(logging.INFO)
    assert Notifier("sunos", runner=ran.append).notify(TITLE, BODY) is False
    assert ran == [] and "no desktop notifications" in caplog.text
    assert "K7QM" not in caplog.text  # the code is never logged


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="notify-send is Linux only")
def test_real_notify_send_process(tmp_path, monkeypatch):
    record = tmp_path / "args.txt"
    fake = tmp_path / "bin" / "notify-send"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a" >> "{record}"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")
    assert Notifier("linux").notify(TITLE, BODY) is True
    assert record.read_text().splitlines() == [
        "--app-name=devicetrust",
        "--urgency=normal",
        TITLE,
        BODY,
    ]
    assert Path(record).stat().st_size > 0
