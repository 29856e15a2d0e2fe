"""Trusted-device approval in real Chromium, with two real agents and a real notification.

Agent A (trusted) runs with its approval poller and a fake ``notify-send`` on
PATH, which records the notification's arguments: a real process boundary. Agent
B registers later under ``trusted_device_approval``. Chromium opens B's sign-in:
the page moves to the code form, the test types the code A's notification
showed, and the same sign-in finishes as "Device verified". Screenshots go to
test-artifacts/.
"""

from __future__ import annotations

import os
import re
import stat
import time

import pytest

from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service

pytestmark = pytest.mark.browser


def test_code_from_the_trusted_devices_notification_approves_in_chromium(tmp_path, artifacts):
    port_b = free_port()
    svc = start_service(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        agent_ports=[port_b],
        extra_env={"DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval"},
    )
    record = tmp_path / "notify-args.txt"
    fake = tmp_path / "bin" / "notify-send"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a" >> "{record}"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    a = make_agent(
        tmp_path,
        "anna-a",
        PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent",
        DEVICETRUST_AGENT_APPROVAL_INTERVAL="5",
    )
    b = make_agent(tmp_path, "anna-b", port=port_b)
    try:
        assert a.enroll(svc.url, svc.enroll_code("anna@example.com"))["state"] == "trusted"
        a.start()
        assert b.enroll(svc.url, svc.enroll_code("anna@example.com"))["state"] == "pending"
        b.start("--no-approvals")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not record.exists():
            time.sleep(0.3)
        assert record.exists(), a.log()
        lines = record.read_text().splitlines()
        assert lines[:3] == [
            "--app-name=devicetrust",
            "--urgency=normal",
            "A new device wants to join",
        ]
        code = re.search(r"enter code ([A-Z0-9]{4}-[A-Z0-9]{4})", lines[3]).group(1)
        assert code not in a.log()  # shown, never logged

        with browser.chromium() as br:
            page = br.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{svc.url}/login")
            page.wait_for_selector("#approval-code", timeout=20000)
            assert page.locator("h1").inner_text() == "Approve this device"
            page.screenshot(path=str(artifacts / "approve-code-form.png"))
            page.fill("#approval-code", "WRNG-C0DE")
            page.click("#approve-submit")
            page.wait_for_selector("#result", timeout=10000)
            assert "not right" in page.locator("#result").inner_text()
            page.screenshot(path=str(artifacts / "approve-wrong-code.png"))
            # The wrong code replaced A's code: wait for the new notification.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(record.read_text().splitlines()) < 8:
                time.sleep(0.3)
            fresh = re.search(
                r"enter code ([A-Z0-9]{4}-[A-Z0-9]{4})", record.read_text().splitlines()[-1]
            ).group(1)
            assert fresh != code
            page.fill("#approval-code", fresh.lower())
            page.click("#approve-submit")
            page.wait_for_selector("h1.ok", timeout=20000)
            assert page.locator("h1").inner_text() == "Device verified"
            assert "anna@example.com" in page.content()
            page.screenshot(path=str(artifacts / "approve-verified.png"))
            assert errors == []
    finally:
        b.stop()
        a.stop()
        svc.stop()
