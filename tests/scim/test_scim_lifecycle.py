"""SCIM deprovisioning ends device trust: end to end with a real agent.

A user provisioned by SCIM enrolls a laptop and signs in; the IdP deactivates
them and the next sign-in is denied (``owner_inactive``, "Your account is
deactivated."); reactivation follows DEVICETRUST_SCIM_REACTIVATION.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device, User
from scim.lifecycle import REAPPROVAL_REASON
from tests.procs import make_agent
from tests.scim_helpers import patch, scim_client, start_scim_service, user_body


def _login(svc, agent):
    """Play the browser through one sign-in; return the status and the final page."""
    browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answer = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    status = {}
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return status, browser.get(f"/login/{txn}/continue").text


def _rows(svc, query):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(query).all()
    finally:
        engine.dispose()


def _provision_and_enroll(svc, scim, tmp_path, name):
    created = scim.post("/Users", json=user_body(name, active=True))
    assert created.status_code == 201, created.text
    code = svc.cli_json("enroll-code", "create", "--user", name)["code"]
    agent = make_agent(tmp_path, name.split("@")[0])
    assert agent.enroll(svc.url, code)["state"] == "trusted"
    agent.start()
    return created.json()["id"], agent


def test_deactivation_denies_the_next_login_and_reactivation_needs_approval(tmp_path, database_url):
    svc, token = start_scim_service(tmp_path, database_url)
    scim = scim_client(svc, token)
    uid, agent = _provision_and_enroll(svc, scim, tmp_path, "alice@example.com")
    try:
        status, _ = _login(svc, agent)
        assert status["status"] == "verified", (status, svc.log()[-3000:])

        off = scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": False}}))
        assert off.status_code == 200 and off.json()["active"] is False
        status, page = _login(svc, agent)
        assert (status["status"], status["code"]) == ("denied", "owner_inactive")
        assert "Your account is deactivated." in page

        # Repeating the deactivation is harmless and audited once.
        scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": False}}))
        events = _rows(svc, select(AuditEvent).where(AuditEvent.action.like("scim.user.%")))
        deactivations = [e for e in events if e.action == "scim.user.deactivate"]
        assert len(deactivations) == 1
        assert deactivations[0].actor == "scim-token:test" and deactivations[0].user_id == uid

        # Default policy: the device must be approved again.
        on = scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": True}}))
        assert on.json()["active"] is True
        ((state, reason),) = _rows(
            svc, select(Device.state, Device.state_reason).where(Device.user_id == uid)
        )
        assert (state, reason) == ("pending", REAPPROVAL_REASON)
        status, _ = _login(svc, agent)
        assert status["code"] == "device_pending"
        (reactivation,) = _rows(
            svc, select(AuditEvent).where(AuditEvent.action == "scim.user.reactivate")
        )
        assert reactivation.details["policy"] == "require_approval"
        assert reactivation.details["devices_to_pending"] == [agent.cli_json("id")["device_id"]]

        svc.cli("devices", "approve", agent.cli_json("id")["device_id"], "--reason", "back")
        status, _ = _login(svc, agent)
        assert status["status"] == "verified"

        # Deletion is a deactivation too (the row stays as an inactive tombstone).
        assert scim.delete(f"/Users/{uid}").status_code == 204
        status, page = _login(svc, agent)
        assert status["code"] == "owner_inactive" and "Your account is deactivated." in page
    finally:
        agent.stop()
        svc.stop()


def test_restore_policy_and_put_deactivation(tmp_path, sqlite_url):
    svc, token = start_scim_service(tmp_path, sqlite_url, DEVICETRUST_SCIM_REACTIVATION="restore")
    scim = scim_client(svc, token)
    uid, agent = _provision_and_enroll(svc, scim, tmp_path, "bob@example.com")
    try:
        user = scim.get(f"/Users/{uid}").json()
        assert scim.put(f"/Users/{uid}", json={**user, "active": False}).status_code == 200
        assert _login(svc, agent)[0]["code"] == "owner_inactive"
        ((active, deactivated_at),) = _rows(
            svc, select(User.active, User.deactivated_at).where(User.id == uid)
        )
        assert active is False and deactivated_at is not None
        # Entra's shape: "True" as a string.
        on = scim.patch(
            f"/Users/{uid}", json=patch({"op": "Replace", "path": "active", "value": "True"})
        )
        assert on.json()["active"] is True
        assert _login(svc, agent)[0]["status"] == "verified"
        ((state,),) = _rows(svc, select(Device.state).where(Device.user_id == uid))
        assert state == "trusted"
    finally:
        agent.stop()
        svc.stop()


def test_a_bad_reactivation_setting_stops_the_service_at_start(tmp_path, sqlite_url):
    from idp_service.platform.config import Settings

    with pytest.raises(ValueError, match="DEVICETRUST_SCIM_REACTIVATION"):
        Settings.from_env({"DEVICETRUST_SCIM_REACTIVATION": "sometimes"})
