"""The login page in real headless Chromium: it finds the agent, and says so when there is none."""

from __future__ import annotations

import pytest

from tests.browser import support as browser
from tests.procs import free_port, make_agent, start_service

pytestmark = pytest.mark.browser


@pytest.fixture
def agent_port():
    return free_port()


@pytest.fixture
def service(tmp_path, agent_port):
    # The login page tries exactly the port the test's agent listens on.
    svc = start_service(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", agent_ports=[agent_port])
    yield svc
    svc.stop()


def _collect_errors(page):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.mark.parametrize("no_callback", [True, False], ids=["browser-path", "both-paths"])
def test_login_page_verifies_the_device(service, tmp_path, artifacts, agent_port, no_callback):
    svc = service
    agent = make_agent(tmp_path, "web", port=agent_port)
    agent.enroll(svc.url, svc.enroll_code("gina@example.com"))
    agent.start(*(["--no-callback"] if no_callback else []))
    try:
        with browser.chromium() as b:
            page = b.new_page()
            errors = _collect_errors(page)
            page.goto(f"{svc.url}/login")
            page.wait_for_selector("h1.ok", timeout=15000)
            assert page.locator("h1").inner_text() == "Device verified"
            assert "gina@example.com" in page.content()
            page.screenshot(
                path=str(artifacts / f"login-verified-{'browser' if no_callback else 'both'}.png")
            )
            assert errors == []
    finally:
        agent.stop()


def test_login_page_explains_a_missing_agent(service, artifacts):
    with browser.chromium() as b:
        page = b.new_page()
        errors = _collect_errors(page)
        page.goto(f"{service.url}/login")
        page.wait_for_selector("#state-no-agent.active", timeout=15000)
        text = page.locator("#state-no-agent").inner_text()
        assert "not running" in text and "devicetrust-agent run" in text
        page.screenshot(path=str(artifacts / "login-no-agent.png"))
        assert errors == []
