"""Real Chromium drives the admin console as an admin who signs in through device trust.

Real service and agent processes: the admin's enrolled agent answers the login
page, the admin group comes from SCIM, and the console approves a pending
device, searches, and revokes a device; a non-admin's trusted device is refused.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service
from tests.scim_helpers import GROUP, SCIM_JSON

pytestmark = pytest.mark.browser


@pytest.fixture
def world(tmp_path, database_url):
    port, bob_port = free_port(), free_port()
    # The login page tries both ports: the admin's agent answers on one, bob's on the other.
    svc = start_service(tmp_path, database_url, agent_ports=[port, bob_port])
    admin_agent = make_agent(tmp_path, "admin", port=port)
    admin_agent.enroll(svc.url, svc.enroll_code("ada@example.com"))
    bob_old = make_agent(tmp_path, "bobold", port=port)
    bob_old.enroll(svc.url, svc.enroll_code("bob@example.com"))  # TOFU: trusted
    bob_new = make_agent(tmp_path, "bobnew", port=bob_port)
    bob_new.enroll(
        svc.url, svc.cli_json("enroll-code", "create", "--user", "bob@example.com")["code"]
    )
    # The admin group, provisioned the way an IdP would: SCIM POST /Groups.
    token = svc.cli_json("scim-token", "create", "console-test")["token"]
    ada = next(u for u in svc.cli_json("users", "list") if u["user_name"] == "ada@example.com")
    resp = httpx.post(
        f"{svc.url}/scim/v2/Groups",
        json={
            "schemas": [GROUP],
            "displayName": "devicetrust-admins",
            "members": [{"value": ada["id"]}],
        },
        headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    yield svc, admin_agent, bob_old, bob_new
    for agent in (admin_agent, bob_old, bob_new):
        agent.stop()
    svc.stop()


def _devices(svc) -> dict[str, dict]:
    return {d["serial"]: d for d in svc.cli_json("devices", "list")}


def _sign_in(page, url: str) -> None:
    page.goto(f"{url}/admin/")
    page.wait_for_url("**/admin/signin")
    page.click("#signin")


def test_admin_console_in_chromium(world, artifacts):
    svc, admin_agent, bob_old, bob_new = world
    serial_old = bob_old.env["DEVICETRUST_AGENT_SERIAL"]
    serial_new = bob_new.env["DEVICETRUST_AGENT_SERIAL"]
    assert _devices(svc)[serial_new]["state"] == "pending"
    admin_agent.start()
    with browser.chromium() as b:
        page = b.new_context().new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        _sign_in(page, svc.url)
        page.wait_for_url(f"{svc.url}/admin/", timeout=20000)
        assert page.locator("#count-pending").inner_text() == "1"
        page.screenshot(path=str(artifacts / "admin-overview.png"), full_page=True)

        # Approve the pending device from the approvals page.
        page.click("nav >> text=Pending")
        row = page.locator("tr", has_text=serial_new)
        row.locator("input[name=reason]").fill("new laptop, ticket IT-42")
        page.screenshot(path=str(artifacts / "admin-pending.png"), full_page=True)
        row.locator("button[value=approve]").click()
        page.wait_for_url("**/admin/pending")
        assert serial_new not in page.content()
        assert _devices(svc)[serial_new]["state"] == "trusted"

        # Search by serial prefix, open the device, revoke it.
        page.click("nav >> text=Devices")
        page.fill("input[name=q]", serial_old[:-2])
        page.click("#search")
        page.wait_for_url("**/admin/devices?q=*")
        assert serial_old in page.content() and serial_new not in page.content()
        page.screenshot(path=str(artifacts / "admin-search.png"), full_page=True)
        page.locator("tr", has_text=serial_old).locator("a").first.click()
        page.fill("form.action input[name=reason]", "reported stolen")
        page.click("#action-revoke")
        page.wait_for_selector("#state:has-text('revoked')")
        assert "device.revoke" in page.content() and "reported stolen" in page.content()
        page.screenshot(path=str(artifacts / "admin-device-revoked.png"), full_page=True)
        assert _devices(svc)[serial_old]["state"] == "revoked"
        assert errors == []
    admin_agent.stop()

    # Bob's now-trusted device passes the device check, but bob is no admin.
    bob_new.start()
    with browser.chromium() as b:
        page = b.new_context().new_page()
        _sign_in(page, svc.url)
        page.wait_for_selector("#refusal", timeout=20000)
        assert "not an administrator" in page.locator("#refusal").inner_text()
        page.screenshot(path=str(artifacts / "admin-refused-non-admin.png"), full_page=True)
        page.goto(f"{svc.url}/admin/devices")
        assert page.url.endswith("/admin/signin")
