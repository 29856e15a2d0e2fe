"""Enroll -> register -> authenticate with the real service and real agent processes.

Runs on SQLite and on the real PostgreSQL server, through both answer paths:
the browser's fetch (the test plays the browser with httpx, sending the Origin
header a browser sends) and the agent's direct callback.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Challenge, Device
from tests.procs import make_agent, start_service


@pytest.fixture
def service(tmp_path, database_url):
    svc = start_service(tmp_path, database_url)
    yield svc
    svc.stop()


def _login(svc, agent, *, forward: bool):
    """Play the browser: start a login, offer the challenge to the agent, maybe forward."""
    browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answer = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
        timeout=10,
    )
    if forward and answer.status_code == 200:
        browser.post(f"/login/{txn}/response", content=answer.json()["response"])
    deadline = time.monotonic() + 10
    status = {}
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return browser, txn, answer, status


def _db(svc):
    return make_engine(svc.env["DEVICETRUST_DATABASE_URL"])


def test_enroll_then_login_through_the_callback_path(service, tmp_path):
    agent = make_agent(tmp_path, "laptop1")
    enrolled = agent.enroll(service.url, service.enroll_code("alice@example.com"))
    assert enrolled == {
        "server_url": service.url,
        "user": "alice@example.com",
        "state": "trusted",
    }
    agent.start()
    try:
        browser, txn, answer, status = _login(service, agent, forward=False)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == service.url
        assert answer.headers["access-control-allow-private-network"] == "true"
        assert status["status"] == "verified", (status, agent.log(), service.log())
        page = browser.get(f"/login/{txn}/continue")
        assert "Device verified" in page.text and "alice@example.com" in page.text
        engine = _db(service)
        with engine.connect() as conn:
            via = conn.execute(
                select(Challenge.consumed_via).where(Challenge.binding == f"login:{txn}")
            ).scalar_one()
            device = conn.execute(select(Device)).one()
        engine.dispose()
        assert via == "callback"
        assert device.state == "trusted" and device.hardware_uuid.startswith("hw-laptop1")
        assert device.last_clock_skew is not None and abs(device.last_clock_skew) < 5
    finally:
        agent.stop()


def test_login_through_the_browser_path_only(service, tmp_path):
    agent = make_agent(tmp_path, "laptop2")
    agent.enroll(service.url, service.enroll_code("bob@example.com"))
    agent.start("--no-callback")
    try:
        browser, txn, answer, status = _login(service, agent, forward=True)
        assert status["status"] == "verified", (status, agent.log())
        engine = _db(service)
        with engine.connect() as conn:
            via = conn.execute(
                select(Challenge.consumed_via).where(Challenge.binding == f"login:{txn}")
            ).scalar_one()
        engine.dispose()
        assert via == "browser"
        # The same answer again, by either path, is refused: each challenge is accepted once.
        again = httpx.post(f"{service.url}/agent/v1/callback", content=answer.json()["response"])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "challenge_replayed"
    finally:
        agent.stop()


def test_second_device_waits_then_revocation_denies(service, tmp_path):
    first = make_agent(tmp_path, "first")
    first.enroll(service.url, service.enroll_code("carol@example.com"))
    second = make_agent(tmp_path, "second")
    result = second.enroll(service.url, service.enroll_code("carol@example.com"))
    assert result["state"] == "pending"  # TOFU: only the first device is trusted at once
    second.start()
    first.start()
    try:
        browser, txn, _, status = _login(service, second, forward=True)
        assert status["status"] == "denied" and status["code"] == "device_pending"
        page = browser.get(f"/login/{txn}/continue")
        assert "waiting for approval" in page.text

        first_id = first.cli_json("id")["device_id"]
        service.cli("devices", "revoke", first_id, "--reason", "laptop stolen")
        browser, txn, _, status = _login(service, first, forward=True)
        assert status["status"] == "denied" and status["code"] == "device_revoked"

        second_id = second.cli_json("id")["device_id"]
        service.cli("devices", "approve", second_id, "--reason", "checked with carol")
        _, _, _, status = _login(service, second, forward=True)
        assert status["status"] == "verified"
    finally:
        first.stop()
        second.stop()


def test_enrollment_code_works_once(service, tmp_path):
    code = service.enroll_code("dave@example.com")
    make_agent(tmp_path, "d1").enroll(service.url, code)
    other = make_agent(tmp_path, "d2")
    out = other.cli("enroll", service.url, code, check=False)
    assert out.returncode != 0
    assert "enroll_code_used" in out.stderr
    bad = other.cli("enroll", service.url, "AAAA-BBBB-CCCC-DDDD", check=False)
    assert bad.returncode != 0 and "enroll_code_invalid" in bad.stderr
    engine = _db(service)
    with engine.connect() as conn:
        devices = conn.execute(select(func.count()).select_from(Device)).scalar_one()
        rejected = conn.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.outcome == "rejected")
        ).scalar_one()
    engine.dispose()
    assert devices == 1
    assert rejected == 2


@pytest.mark.postgres
def test_fifty_concurrent_submissions_of_one_response_succeed_once(tmp_path, postgres_url):
    from concurrent.futures import ThreadPoolExecutor

    svc = start_service(tmp_path, postgres_url, workers=2)
    agent = make_agent(tmp_path, "racer")
    try:
        agent.enroll(svc.url, svc.enroll_code("erin@example.com"))
        agent.start("--no-callback")
        browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
        txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
        challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
        envelope = httpx.post(
            f"http://127.0.0.1:{agent.port}/v1/challenge",
            json={"challenge": challenge},
            headers={"Origin": svc.url},
        ).json()["response"]

        def submit(_):
            return httpx.post(f"{svc.url}/agent/v1/callback", content=envelope, timeout=30)

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(submit, range(50)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 1, codes
        assert codes.count(409) == 49, codes
        assert {r.json()["error"]["code"] for r in results if r.status_code == 409} == {
            "challenge_replayed"
        }
        assert browser.get(f"/login/{txn}/status").json()["status"] == "verified"
    finally:
        agent.stop()
        svc.stop()
