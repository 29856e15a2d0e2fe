"""Real Chromium: an employee on a cloned device meets the suspension page; an admin reads
the evidence in the console and approves. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import shutil

import pytest

from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service

pytestmark = pytest.mark.browser


def test_suspended_device_in_chromium(tmp_path, database_url, artifacts):
    clone_port = free_port()
    svc = start_service(tmp_path, database_url, agent_ports=[clone_port])
    original = make_agent(tmp_path, "laptop")
    original.enroll(svc.url, svc.enroll_code("lee@example.com"))
    device_id = original.cli_json("id")["device_id"]
    clone = make_agent(tmp_path, "copy", port=clone_port)
    shutil.copytree(original.state_dir, clone.state_dir)
    clone.start("--no-reports")
    try:
        with browser.chromium() as b:
            page = b.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{svc.url}/login")
            page.wait_for_selector("text=suspended pending a security review by IT", timeout=20000)
            assert "Contact your IT help desk" in page.content()
            page.screenshot(path=str(artifacts / "detection-login-suspended.png"), full_page=True)

            token = svc.cli_json("admin", "bootstrap")["token"]
            page.goto(f"{svc.url}/admin/bootstrap")
            page.fill("input[name=token]", token)
            page.click("text=Open the console")
            page.wait_for_url(f"{svc.url}/admin/", timeout=10000)
            assert page.locator("#count-review").inner_text() == "1"
            assert page.locator("#count-suspended").inner_text() == "1"
            page.goto(f"{svc.url}/admin/pending")
            page.click(f"a[href='/admin/devices/{device_id}']")
            page.wait_for_selector("#suspended-note")
            assert "hardware_mismatch" in page.locator("#flag-table").inner_text()
            assert clone.env["DEVICETRUST_AGENT_HARDWARE_UUID"] in page.content()
            page.screenshot(path=str(artifacts / "detection-device-suspended.png"), full_page=True)
            page.fill("input[aria-label=Reason]", "checked with lee: new mainboard")
            page.click("#action-approve")
            page.wait_for_selector("#state.trusted")
            assert (
                "approve: checked with lee: new mainboard"
                in page.locator("#flag-table").inner_text()
            )
            assert errors == []
    finally:
        clone.stop()
        svc.stop()
