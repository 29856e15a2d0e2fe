"""Real browser, real processes: demo SP -> IdP -> local agent -> SP, in headless Chromium.

The IdP runs under gunicorn, the agent is the real ``devicetrust-agent run``,
the SP is ``python -m idp_service.demo_sp`` (python3-saml, strict). Chromium
(Debian's, driven by Playwright) clicks "Sign in" and must land signed in; after
the device is revoked, the same click must end on a page that says why, and the
SP must receive AuthnFailed. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.browser.support import chromium
from tests.procs import free_port, make_agent, start_service, wait_http

pytestmark = pytest.mark.browser


@pytest.fixture
def stack(tmp_path, database_url):
    agent = make_agent(tmp_path, "browser-laptop")
    svc = start_service(tmp_path, database_url, agent_ports=[agent.port], workers=2)
    sp_port = free_port()
    sp_url = f"http://127.0.0.1:{sp_port}"
    sp_log = (tmp_path / "demo-sp.log").open("w")
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
        stdout=sp_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(sp_url + "/metadata", timeout=60)
        agent.enroll(svc.url, svc.enroll_code("alice@example.com"))
        agent.start()
        yield svc, agent, sp_url
    finally:
        agent.stop()
        sp.terminate()
        sp.wait(10)
        svc.stop()


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def test_sign_in_from_the_demo_sp_then_deny_after_revocation(stack, browser, artifacts, request):
    svc, agent, sp_url = stack
    db = request.node.callspec.params["database_url"]
    page = browser.new_page()
    try:
        _journey(svc, agent, sp_url, db, page, artifacts)
    except Exception:
        page.screenshot(path=str(artifacts / f"saml-{db}-failure.png"), full_page=True)
        print("URL:", page.url, "\nPAGE:", page.content()[:3000])
        print("SERVICE LOG:", svc.log()[-3000:], "\nAGENT LOG:", agent.log()[-2000:])
        raise


def _journey(svc, agent, sp_url, db, page, artifacts):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"js: {exc}"))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    page.goto(sp_url + "/")
    page.screenshot(path=str(artifacts / f"saml-{db}-1-sp-home.png"))
    page.click("#sign-in")
    page.wait_for_selector("#signed-in", timeout=20000)
    page.screenshot(path=str(artifacts / f"saml-{db}-2-signed-in.png"), full_page=True)
    assert page.text_content("#nameid") == "alice@example.com"
    assert page.text_content('[data-attribute="email"]') == "alice@example.com"
    device_id = agent.cli_json("id")["device_id"]
    assert page.text_content('[data-attribute="deviceId"]') == device_id
    assert page.text_content('[data-attribute="devicePosture"]') == "unknown"
    assert errors == []  # no JavaScript errors, no failed requests on the way in

    svc.cli("devices", "revoke", device_id, "--reason", "laptop stolen")
    page.goto(sp_url + "/logout")
    page.click("#sign-in")
    page.wait_for_selector("#code", timeout=20000)
    page.screenshot(path=str(artifacts / f"saml-{db}-3-refused.png"), full_page=True)
    assert page.text_content("#code") == "device_revoked"
    assert "revoked" in page.text_content("#reason")
    page.click("#return")
    page.wait_for_selector("#error", timeout=20000)
    page.screenshot(path=str(artifacts / f"saml-{db}-4-sp-refused.png"), full_page=True)
    # python3-saml reports the StatusMessage; the status codes (Responder/AuthnFailed) are
    # checked exactly in tests/saml/test_saml_login.py.
    body = page.text_content("body")
    assert "was Responder -> device_revoked" in body and "not Success" in body
    assert page.query_selector("#signed-in") is None
