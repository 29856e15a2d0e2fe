"""A new laptop enrolls after an upstream sign-in, in real Chromium, then signs in to an SP.

Real processes on loopback: the service (gunicorn) with panva's oidc-provider as
its upstream IdP, the demo SAML SP (python3-saml, strict), and a
``devicetrust-agent run`` that was never enrolled. The person clicks "Sign in" at
the SP, meets the login page, signs in at the provider's own login form, registers
the device (TOFU: the user's first device is trusted), and lands signed in at the
SP. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import create_engine, select

from idp_service.platform.models import AuditEvent, Device
from tests.browser.support import chromium
from tests.procs import free_port, make_agent, wait_http
from tests.upstream.support import upstream_stack

pytestmark = pytest.mark.browser


@pytest.fixture
def stack(tmp_path):
    agent = make_agent(tmp_path, "new-laptop")
    svc, op = upstream_stack(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", agent_ports=[agent.port]
    )
    sp_port = free_port()
    sp_url = f"http://127.0.0.1:{sp_port}"
    sp = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idp_service.demo_sp",
            "--idp",
            svc.url,
            "--port",
            str(sp_port),
            "--state-dir",
            str(tmp_path / "demo-sp"),
        ],
        env=svc.env,
        stdout=(tmp_path / "demo-sp.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(sp_url + "/metadata", timeout=60)
        svc.cli("users", "add", "rita@example.com")
        agent.start("--no-reports", "--service", svc.url)
        yield svc, op, agent, sp_url
    finally:
        agent.stop()
        sp.terminate()
        sp.wait(10)
        svc.stop()
        op.stop()


def test_new_laptop_upstream_sign_in_tofu_enroll_then_sp(stack, artifacts):
    svc, op, agent, sp_url = stack
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"js: {exc}"))
        try:
            page.goto(sp_url + "/")
            page.click("#sign-in")
            page.wait_for_selector("#state-enroll.active", timeout=20000)
            assert page.is_visible("#upstream-corp")
            page.screenshot(path=str(artifacts / "upstream-1-enroll-offer.png"), full_page=True)
            page.click("#upstream-corp")
            page.wait_for_selector('input[name="login"]', timeout=20000)
            assert page.url.startswith(op.issuer + "/interaction/")
            page.fill('input[name="login"]', "rita@example.com")
            page.fill('input[name="password"]', "whatever")
            page.screenshot(path=str(artifacts / "upstream-2-provider-login.png"), full_page=True)
            page.click('button[type="submit"]')
            page.wait_for_selector("#enroll-tofu:not([hidden])", timeout=20000)
            assert page.url.startswith(svc.url + "/login/")
            assert page.text_content("#enroll-tofu-user") == "rita@example.com"
            assert page.is_hidden("#enroll-upstream")
            page.screenshot(path=str(artifacts / "upstream-3-register.png"), full_page=True)
            page.click("#enroll-tofu-button")
            page.wait_for_selector("#signed-in", timeout=30000)
            page.screenshot(path=str(artifacts / "upstream-4-signed-in.png"), full_page=True)
            assert page.text_content("#nameid") == "rita@example.com"
            device_id = agent.cli_json("id")["device_id"]
            assert page.text_content('[data-attribute="deviceId"]') == device_id
            assert errors == []
        except Exception:
            page.screenshot(path=str(artifacts / "upstream-failure.png"), full_page=True)
            print("URL:", page.url, "\nPAGE:", page.content()[:3000])
            print("SERVICE LOG:", svc.log()[-3000:], "\nAGENT LOG:", agent.log()[-2000:])
            raise
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    with engine.connect() as conn:
        device = conn.execute(select(Device.state, Device.state_reason)).one()
        register = conn.execute(
            select(AuditEvent.details).where(
                AuditEvent.action == "device.register", AuditEvent.outcome == "ok"
            )
        ).scalar_one()
    engine.dispose()
    assert device.state == "trusted"
    assert device.state_reason == "first device (TOFU, after an upstream sign-in)"
    assert register["method"] == "upstream" and register["policy"] == "tofu"
