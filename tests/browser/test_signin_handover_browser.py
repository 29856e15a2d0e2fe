"""A console sign-in cannot be handed over by planting a session cookie (real Chromium).

The attacker starts an admin sign-in in their own browser (no script runs
there, so nothing of theirs talks to an agent), copies the session cookie into
the admin's browser and sends the admin to the login page. The admin's real
agent answers. The attacker's ``/continue`` must get no console session: the
transaction is bound to the browser that fetched the answered challenge. The
admin's own page, held back until then, continues to the console.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine, select

from idp_service.platform.models import AuditEvent
from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service
from tests.scim_helpers import GROUP, SCIM_JSON

pytestmark = pytest.mark.browser


@pytest.fixture
def world(tmp_path, database_url):
    port = free_port()
    svc = start_service(tmp_path, database_url, agent_ports=[port])
    agent = make_agent(tmp_path, "ada", port=port)
    agent.enroll(svc.url, svc.enroll_code("ada@example.com"))
    token = svc.cli_json("scim-token", "create", "handover-test")["token"]
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
    agent.start()
    yield svc, database_url
    agent.stop()
    svc.stop()


def test_a_planted_signin_cookie_gives_the_attacker_no_console(world, artifacts):
    svc, database_url = world
    with browser.chromium() as b:
        attacker = b.new_context(java_script_enabled=False)
        evil = attacker.new_page()
        evil.goto(f"{svc.url}/admin/signin")
        evil.click("#signin")
        evil.wait_for_url("**/login/*")
        login_url = evil.url
        txn = login_url.rsplit("/", 1)[-1]

        victim = b.new_context()
        victim.add_cookies(attacker.cookies())  # the planted cookie
        page = victim.new_page()
        held: list = []
        # Hold the admin's page at /continue, so the attacker continues first.
        page.route("**/login/*/continue", lambda route: held.append(route))
        page.goto(login_url)
        for _ in range(300):  # pump Playwright's events until the route handler has run
            if held:
                break
            page.wait_for_timeout(100)
        assert held, "the admin's page never reached /continue"

        resp = evil.goto(f"{svc.url}/login/{txn}/continue")
        assert resp.status == 403
        assert "answered by a device in another browser" in evil.content()
        evil.screenshot(path=str(artifacts / "signin-handover-refused.png"), full_page=True)
        evil.goto(f"{svc.url}/admin/devices")
        assert evil.url.endswith("/admin/signin")  # no console for the attacker

        held[0].continue_()
        page.wait_for_url(f"{svc.url}/admin/", timeout=20000)
        page.screenshot(path=str(artifacts / "signin-handover-admin.png"), full_page=True)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            codes = (
                conn.execute(select(AuditEvent.code).where(AuditEvent.action == "login.continue"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert codes == ["login_elsewhere"]
