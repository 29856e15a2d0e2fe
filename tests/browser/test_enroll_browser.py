"""Devices that are not (yet) trusted, in real headless Chromium with the real processes.

The service and ``devicetrust-agent run`` (not enrolled, configured with
``--service``) run on loopback. The person enters the enrollment code on the
login page, and lands signed in; a wrong code says so and changes nothing; a
second device waits for approval and checks again in the same sign-in; an
identity broker's signed subject registers a user's first device without a code,
end to end through SAML. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest
from lxml import etree
from sqlalchemy import create_engine, delete, select

from idp_service.platform.models import AuditEvent, Device
from tests.browser.support import chromium
from tests.procs import make_agent, start_service
from tests.saml_support import (
    NS,
    authn_request_xml,
    cached_key_pair,
    sign_enveloped,
    sp_metadata,
)

pytestmark = pytest.mark.browser

BROKER = "http://broker.test/metadata"
BROKER_ACS = "http://broker.test/acs"


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def stack(tmp_path, database_url, *, service_setting=True, name="web"):
    """The service, and an agent that is not enrolled (``--service`` naming it, or not)."""
    agent = make_agent(tmp_path, name)
    svc = start_service(tmp_path, database_url, agent_ports=[agent.port])
    try:
        agent.start("--no-reports", *(["--service", svc.url] if service_setting else []))
    except Exception:
        svc.stop()
        raise
    return svc, agent


def watch(page):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"js: {exc}"))
    return errors


def db_rows(svc, query):
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(query).all()
    finally:
        engine.dispose()


def wait_text(page, selector):
    page.wait_for_function(
        "s => (document.querySelector(s).textContent || '').trim().length > 0",
        arg=selector,
        timeout=20000,
    )
    return page.text_content(selector)


def test_enter_the_code_on_the_login_page_then_signed_in(
    tmp_path, database_url, browser, artifacts
):
    db = "pg" if database_url.startswith("postgresql") else "sqlite"
    svc, agent = stack(tmp_path, database_url)
    try:
        page = browser.new_page()
        errors = watch(page)
        try:
            _code_journey(svc, agent, page, artifacts, db)
        except Exception:
            page.screenshot(path=str(artifacts / f"enroll-{db}-failure.png"), full_page=True)
            print("PAGE:", page.content()[:3000], "\nAGENT LOG:", agent.log()[-3000:])
            raise
        assert errors == []
    finally:
        agent.stop()
        svc.stop()


def _code_journey(svc, agent, page, artifacts, db):
    page.goto(f"{svc.url}/login")
    page.wait_for_selector("#state-enroll.active", timeout=20000)
    assert "not enrolled yet" in page.text_content("#enroll-intro")
    assert page.is_hidden("#enroll-tofu")  # no broker vouched for anyone here
    page.screenshot(path=str(artifacts / f"enroll-{db}-1-code-form.png"), full_page=True)

    # A wrong code: a clear error, the form stays, nothing is stored anywhere.
    page.fill("#enroll-code", "WRNG-WRNG-WRNG-WRNG")
    page.click("#enroll-submit")
    assert "not valid" in wait_text(page, "#enroll-error")
    assert "ask IT for a new one" in page.text_content("#enroll-error-hint")
    assert page.is_visible("#state-enroll.active")
    page.screenshot(path=str(artifacts / f"enroll-{db}-2-wrong-code.png"), full_page=True)
    assert db_rows(svc, select(Device.id)) == []
    events = db_rows(
        svc,
        select(AuditEvent.outcome, AuditEvent.code).where(AuditEvent.action == "device.register"),
    )
    assert events == [("rejected", "enroll_code_invalid")]
    assert not (agent.state_dir / "enrollment.json").exists()

    # The right code: enrolled, and the sign-in goes on by itself.
    code = svc.enroll_code("nora@example.com")
    page.fill("#enroll-code", code)
    page.click("#enroll-submit")
    page.wait_for_selector("h1.ok", timeout=20000)
    assert page.text_content("h1") == "Device verified"
    assert "nora@example.com" in page.text_content("main")
    page.screenshot(path=str(artifacts / f"enroll-{db}-3-verified.png"), full_page=True)
    assert json.loads((agent.state_dir / "enrollment.json").read_text())["server_url"] == svc.url
    assert code not in agent.log() and code not in svc.log()

    # The service forgets the device: the page asks for a code again, in the same words.
    device_id = agent.cli_json("id")["device_id"]
    engine = create_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(delete(Device).where(Device.id == device_id))
    engine.dispose()
    page.goto(f"{svc.url}/login")
    page.wait_for_selector("#state-enroll.active", timeout=20000)
    assert "does not know this device" in page.text_content("#enroll-intro")
    page.screenshot(path=str(artifacts / f"enroll-{db}-4-device-unknown.png"), full_page=True)
    page.fill("#enroll-code", svc.enroll_code("nora@example.com"))
    page.click("#enroll-submit")
    page.wait_for_selector("h1.ok", timeout=20000)


def test_a_second_device_waits_for_approval_and_checks_again(tmp_path, browser, artifacts):
    first = make_agent(tmp_path, "first")
    svc, agent = stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", name="second")
    try:
        first.enroll(svc.url, svc.enroll_code("olga@example.com"))
        page = browser.new_page()
        errors = watch(page)
        page.goto(f"{svc.url}/login")
        page.wait_for_selector("#state-enroll.active", timeout=20000)
        page.fill("#enroll-code", svc.enroll_code("olga@example.com"))
        page.click("#enroll-submit")
        page.wait_for_selector("#state-pending.active", timeout=20000)
        text = page.inner_text("#state-pending")
        assert "Waiting for approval" in text and "IT or one of your trusted devices" in text
        page.screenshot(path=str(artifacts / "enroll-5-pending.png"), full_page=True)

        page.click("#pending-check")
        assert "still waiting" in wait_text(page, "#pending-note")
        page.wait_for_selector("#state-pending.active")

        device_id = agent.cli_json("id")["device_id"]
        svc.cli("devices", "approve", device_id, "--reason", "checked with olga")
        page.click("#pending-check")
        page.wait_for_selector("h1.ok", timeout=20000)
        assert "olga@example.com" in page.text_content("main")
        page.screenshot(path=str(artifacts / "enroll-6-approved.png"), full_page=True)
        assert errors == []
    finally:
        agent.stop()
        svc.stop()


def test_an_agent_without_a_service_setting_shows_the_terminal_way(tmp_path, browser, artifacts):
    svc, agent = stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", service_setting=False)
    try:
        page = browser.new_page()
        errors = watch(page)
        page.goto(f"{svc.url}/login")
        page.wait_for_selector("#state-enroll-terminal.active", timeout=20000)
        assert "devicetrust-agent enroll" in page.text_content("#state-enroll-terminal")
        page.screenshot(path=str(artifacts / "enroll-7-terminal.png"), full_page=True)
        assert errors == []
    finally:
        agent.stop()
        svc.stop()


def test_broker_tofu_registers_the_first_device_through_saml(tmp_path, browser, artifacts):
    svc, agent = stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        key, cert = cached_key_pair("broker-browser")
        meta = tmp_path / "broker.xml"
        meta.write_bytes(sp_metadata(BROKER, [BROKER_ACS], cert_pem=cert))
        svc.cli(
            "sp", "add", "--metadata", str(meta), "--name", "Okta",
            "--identity-broker", "--nameid-format", "unspecified",
        )  # fmt: skip
        svc.cli("users", "add", "pia@example.com")
        request = sign_enveloped(
            authn_request_xml(
                issuer=BROKER,
                subject="pia@example.com",
                request_id="_tofu-browser",
                destination=svc.url + "/saml/sso",
            ),
            key,
            cert,
        )
        form = (
            f'<form method="post" action="{svc.url}/saml/sso">'
            f'<input type="hidden" name="SAMLRequest" value="{base64.b64encode(request).decode()}">'
            '<input type="hidden" name="RelayState" value="okta-state"></form>'
            "<script>document.forms[0].submit()</script>"
        )
        received: dict[str, list[str]] = {}

        def broker(route):
            if route.request.method == "POST":
                received.update(parse_qs(route.request.post_data or ""))
                route.fulfill(status=200, content_type="text/html", body="<p id=back>back</p>")
            else:
                route.fulfill(status=200, content_type="text/html", body=form)

        page = browser.new_page()
        errors = watch(page)
        page.route("http://broker.test/**", broker)
        page.goto("http://broker.test/start")
        page.wait_for_selector("#enroll-tofu:not([hidden])", timeout=20000)
        assert page.text_content("#enroll-tofu-user") == "pia@example.com"
        assert "Okta" in page.text_content("main")
        page.screenshot(path=str(artifacts / "enroll-8-broker-tofu.png"), full_page=True)
        page.click("#enroll-tofu-button")
        page.wait_for_selector("#back", timeout=20000)

        xml = base64.b64decode(received["SAMLResponse"][0])
        root = etree.fromstring(xml)
        status = root.find("samlp:Status/samlp:StatusCode", NS).get("Value")
        assert status.endswith(":Success"), xml
        assert root.get("InResponseTo") == "_tofu-browser"
        assert root.find(".//saml:Subject/saml:NameID", NS).text == "pia@example.com"
        assert received["RelayState"] == ["okta-state"]
        device_id = agent.cli_json("id")["device_id"]
        assert db_rows(svc, select(Device.id, Device.state)) == [(device_id, "trusted")]
        event = db_rows(
            svc,
            select(AuditEvent.outcome, AuditEvent.details).where(
                AuditEvent.action == "device.register"
            ),
        )
        assert event[-1][0] == "ok" and event[-1][1]["method"] == "broker"
        assert errors == []
    finally:
        agent.stop()
        svc.stop()
