"""Clone, duplicate and staleness detection end to end, with real service and agent processes,
on SQLite and PostgreSQL: what is refused, what is flagged with which evidence, how the
console and the API show it, and how an admin's decision restores the device.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

import httpx
import pytest
from sqlalchemy import select, update

from idp_service.devices.flag_tables import DeviceFlag
from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device
from tests.admin_helpers import csrf_of
from tests.procs import AgentProc, make_agent, start_service


def _login(svc, agent):
    """Play the browser: start a login, offer the challenge to ``agent``, forward its answer."""
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
    browser.post(f"/login/{txn}/response", content=answer.json()["response"])
    deadline = time.monotonic() + 10
    status: dict = {}
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return browser, txn, status


def _api(svc):
    token = svc.cli_json("api-token", "create", "detect", "--scope", "write")["token"]
    return httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _console(svc):
    token = svc.cli_json("admin", "bootstrap")["token"]
    client = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    csrf = csrf_of(client.get("/admin/bootstrap").text)
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    return client


def _events(engine, device_id, action):
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(AuditEvent).where(
                    AuditEvent.device_id == device_id, AuditEvent.action == action
                )
            )
        )


def _copy(tmp_path, agent, name, **env) -> AgentProc:
    """Another machine running a copy of ``agent``'s state directory (same key, same id)."""
    other = make_agent(tmp_path, name, **env)
    shutil.copytree(agent.state_dir, other.state_dir)
    return other


def _same_hardware(tmp_path, name, agent, *, serial=True) -> AgentProc:
    """A new device (own state, own key) on ``agent``'s hardware."""
    other = make_agent(tmp_path, name)
    other.env["DEVICETRUST_AGENT_HARDWARE_UUID"] = agent.env["DEVICETRUST_AGENT_HARDWARE_UUID"]
    if serial:
        other.env["DEVICETRUST_AGENT_SERIAL"] = agent.env["DEVICETRUST_AGENT_SERIAL"]
    return other


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


@pytest.fixture
def engine_of():
    engines = []

    def make(svc):
        engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def test_copied_key_on_other_hardware_is_suspended_until_an_admin_decides(
    tmp_path, database_url, engine_of
):
    svc = start_service(tmp_path, database_url)
    original = make_agent(tmp_path, "orig")
    clone = None
    try:
        assert original.enroll(svc.url, svc.enroll_code("dana@example.com"))["state"] == "trusted"
        device_id = original.cli_json("id")["device_id"]
        original.start("--no-reports")
        assert _login(svc, original)[2]["status"] == "verified"

        clone = _copy(tmp_path, original, "clone")
        clone.start("--no-reports")
        browser, txn, status = _login(svc, clone)
        assert status["status"] == "denied" and status["code"] == "device_suspended", status
        assert status["message"] == "This device is suspended pending a security review by IT."
        page = browser.get(f"/login/{txn}/continue").text
        assert "suspended pending a security review by IT" in page
        assert "Contact your IT help desk" in page

        api = _api(svc)
        detail = api.get(f"/devices/{device_id}").json()
        assert detail["device"]["state"] == "suspended"
        (flag,) = detail["flags"]
        assert flag["kind"] == "hardware_mismatch" and flag["resolved_at"] is None
        evidence = flag["evidence"]
        assert (
            evidence["stored"]["hardware_uuid"] == original.env["DEVICETRUST_AGENT_HARDWARE_UUID"]
        )
        assert evidence["seen"]["hardware_uuid"] == clone.env["DEVICETRUST_AGENT_HARDWARE_UUID"]
        assert evidence["seen"]["serial"] == clone.env["DEVICETRUST_AGENT_SERIAL"]
        assert evidence["via"] in ("browser", "callback") and evidence["remote_addr"] == "127.0.0.1"
        assert api.get(f"/devices/{device_id}/flags").json()["items"] == detail["flags"]
        assert [d["id"] for d in api.get("/review").json()["items"]] == [device_id]
        assert (
            api.get("/devices", params={"state": "suspended"}).json()["items"][0]["id"] == device_id
        )
        assert api.get("/overview").json()["needs_review"] == 1

        engine = engine_of(svc)
        (flagged,) = _events(engine, device_id, "device.flag")
        assert flagged.code == "hardware_mismatch" and flagged.actor == "system"
        (suspended,) = _events(engine, device_id, "device.suspend")
        assert suspended.details["from"] == "trusted" and suspended.details["to"] == "suspended"
        # (challenge_replayed: the second copy of a verified answer, browser or callback.)
        refused = [e for e in _events(engine, device_id, "login.device_verified") if e.code]
        assert {e.code for e in refused} - {"challenge_replayed"} == {"device_suspended"}

        # The original is refused too now: one key, two machines; IT decides which is real.
        assert _login(svc, original)[2]["code"] == "device_suspended"

        console = _console(svc)
        html = console.get(f"/admin/devices/{device_id}").text
        assert "hardware_mismatch" in html and 'id="suspended-note"' in html
        assert clone.env["DEVICETRUST_AGENT_HARDWARE_UUID"] in html
        assert f"/admin/devices/{device_id}" in console.get("/admin/pending").text
        assert device_id in console.get("/admin/devices", params={"state": "suspended"}).text
        assert device_id in console.get("/admin/devices", params={"flagged": "1"}).text
        assert 'id="count-review">1<' in console.get("/admin/").text

        # The admin decides the clone's hardware is the real one (say, a replaced board).
        approved = api.post(f"/devices/{device_id}/approve", json={"reason": "board replaced"})
        assert approved.status_code == 200 and approved.json()["state"] == "trusted"
        (flag,) = api.get(f"/devices/{device_id}/flags").json()["items"]
        assert flag["resolution"] == "approve: board replaced"
        assert flag["resolved_by"] == "api:detect" and flag["resolved_at"]
        assert api.get("/review").json()["items"] == []
        assert _login(svc, clone)[2]["status"] == "verified"

        # The original machine reports its posture: its hardware is now the odd one out,
        # and the report path suspends the device just as a sign-in would.
        original.stop()
        original = _same_hardware(tmp_path, "orig-again", original)  # a new port, same machine
        shutil.copytree(clone.state_dir, original.state_dir)
        original.start()

        def suspended_by_report():
            items = api.get(f"/devices/{device_id}/flags").json()["items"]
            return [
                f for f in items if f["resolved_at"] is None and f["evidence"]["via"] == "report"
            ]

        (by_report,) = _wait(suspended_by_report)
        assert by_report["kind"] == "hardware_mismatch"
        assert (
            by_report["evidence"]["seen"]["hardware_uuid"]
            == original.env["DEVICETRUST_AGENT_HARDWARE_UUID"]
        )
        assert api.get(f"/devices/{device_id}").json()["device"]["state"] == "suspended"
        revoked = api.post(f"/devices/{device_id}/revoke", json={"reason": "cloned key"})
        assert revoked.json()["state"] == "revoked"
        assert _login(svc, clone)[2]["code"] == "device_revoked"
    finally:
        original.stop()
        if clone is not None:
            clone.stop()
        svc.stop()


def test_same_hardware_with_a_new_key_starts_suspended(tmp_path, database_url, engine_of):
    svc = start_service(tmp_path, database_url)
    first = make_agent(tmp_path, "first")
    again = None
    try:
        first.enroll(svc.url, svc.enroll_code("erin@example.com"))
        first_id = first.cli_json("id")["device_id"]
        again = _same_hardware(tmp_path, "reinstalled", first)
        result = again.enroll(svc.url, svc.enroll_code("erin@example.com"))
        assert result["state"] == "suspended"
        again_id = again.cli_json("id")["device_id"]
        api = _api(svc)
        (flag,) = api.get(f"/devices/{again_id}/flags").json()["items"]
        assert flag["kind"] == "duplicate_hardware" and flag["evidence"]["via"] == "register"
        (other,) = flag["evidence"]["others"]
        assert other["device_id"] == first_id and other["state"] == "trusted"
        assert (
            other["sign_key_fingerprint"]
            == api.get(f"/devices/{first_id}").json()["device"]["sign_key_fingerprint"]
        )
        assert api.get(f"/devices/{first_id}/flags").json()["items"] == []  # the old one is fine
        engine = engine_of(svc)
        (registered,) = _events(engine, again_id, "device.register")
        assert registered.details["state"] == "suspended"
        assert [e.code for e in _events(engine, again_id, "device.flag")] == ["duplicate_hardware"]

        again.start("--no-reports")
        assert _login(svc, again)[2]["code"] == "device_suspended"
        # A revoked device's hardware is free again: the documented way to re-install.
        api.post(f"/devices/{again_id}/revoke", json={"reason": "reinstall, old key stays"})
        api.post(f"/devices/{first_id}/revoke", json={"reason": "re-installed"})
        third = _same_hardware(tmp_path, "third", first, serial=False)
        assert third.enroll(svc.url, svc.enroll_code("erin@example.com"))["state"] == "trusted"
    finally:
        if again is not None:
            again.stop()
        svc.stop()


def test_two_agents_answering_alternately_for_one_device(tmp_path, database_url, engine_of):
    svc = start_service(tmp_path, database_url)
    one = make_agent(tmp_path, "one")
    two = None
    try:
        one.enroll(svc.url, svc.enroll_code("finn@example.com"))
        device_id = one.cli_json("id")["device_id"]
        one.start("--no-reports")
        # The same state directory and hardware, a second process on another port.
        two = AgentProc(
            state_dir=one.state_dir,
            port=make_agent(tmp_path, "x").port,
            env={**one.env},
        )
        two.env["DEVICETRUST_AGENT_PORTS"] = str(two.port)
        two.start("--no-reports")
        assert _login(svc, one)[2]["status"] == "verified"  # A
        assert _login(svc, two)[2]["status"] == "verified"  # B: as after a restart
        assert _login(svc, two)[2]["status"] == "verified"  # B
        status = _login(svc, one)[2]  # A again: two agents
        assert status["code"] == "device_suspended", status
        api = _api(svc)
        (flag,) = api.get(f"/devices/{device_id}/flags").json()["items"]
        assert flag["kind"] == "concurrent_agents"
        first, second, third = flag["evidence"]["instances"]
        assert first == third != second
        assert flag["evidence"]["window_seconds"] == 3600
        # Approving accepts the instances seen so far; the two keep answering, and the
        # next alternation is noticed again.
        api.post(f"/devices/{device_id}/approve", json={"reason": "checked"})
        assert _login(svc, two)[2]["status"] == "verified"
        assert _login(svc, one)[2]["status"] == "verified"  # B -> A is a switch, not a return
        assert _login(svc, two)[2]["code"] == "device_suspended"
    finally:
        one.stop()
        if two is not None:
            two.stop()
        svc.stop()


def test_flag_policy_records_but_keeps_the_device_trusted(tmp_path, database_url, engine_of):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={"DEVICETRUST_CLONE_POLICY": "flag", "DEVICETRUST_STALE_POLICY": "flag"},
    )
    original = make_agent(tmp_path, "keep")
    clone = None
    try:
        original.enroll(svc.url, svc.enroll_code("gus@example.com"))
        device_id = original.cli_json("id")["device_id"]
        clone = _copy(tmp_path, original, "keepclone")
        clone.start("--no-reports")
        assert _login(svc, clone)[2]["status"] == "verified"
        assert _login(svc, clone)[2]["status"] == "verified"  # flagged once, counted
        api = _api(svc)
        (flag,) = api.get(f"/devices/{device_id}/flags").json()["items"]
        assert flag["kind"] == "hardware_mismatch" and flag["resolved_at"] is None
        assert flag["evidence"]["count"] == 2
        assert api.get(f"/devices/{device_id}").json()["device"]["state"] == "trusted"
        assert [
            d["id"] for d in api.get("/devices", params={"flagged": "true"}).json()["items"]
        ] == [device_id]
        # The console offers "Mark flags reviewed" for a device the policy left alone.
        console = _console(svc)
        html = console.get(f"/admin/devices/{device_id}").text
        assert 'id="action-resolve_flags"' in html
        resolved = console.post(
            f"/admin/devices/{device_id}/action",
            data={"action": "resolve_flags", "reason": "known VM", "csrf": csrf_of(html)},
        )
        assert resolved.status_code == 303
        (flag,) = api.get(f"/devices/{device_id}/flags").json()["items"]
        assert flag["resolution"] == "reviewed: known VM" and flag["resolved_by"].startswith(
            "admin"
        )
        again = api.post(f"/devices/{device_id}/flags/resolve", json={"reason": "again"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "no_open_flags"

        # Staleness under "flag": flagged by the sweep, still trusted, signs in.
        engine = engine_of(svc)
        with engine.begin() as conn:
            conn.execute(
                update(Device)
                .where(Device.id == device_id)
                .values(last_seen=dt.datetime.now(dt.UTC) - dt.timedelta(days=45))
            )
        swept = svc.cli_json("devices", "sweep-stale")
        assert swept["policy"] == "flag"
        assert [(d["device_id"], d["to"]) for d in swept["devices"]] == [(device_id, "trusted")]
        assert svc.cli_json("devices", "sweep-stale")["devices"] == []  # flagged once
        assert _login(svc, clone)[2]["status"] == "verified"
        kinds = {f["kind"] for f in api.get(f"/devices/{device_id}/flags").json()["items"]}
        assert kinds == {"hardware_mismatch", "stale"}
    finally:
        original.stop()
        if clone is not None:
            clone.stop()
        svc.stop()


def _age(engine, device_id, days):
    with engine.begin() as conn:
        conn.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(last_seen=dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
        )


def test_stale_devices_are_denied_by_login_sweep_and_background(tmp_path, database_url, engine_of):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={"DEVICETRUST_STALE_AFTER": "7d", "DEVICETRUST_STALE_SWEEP_INTERVAL": "1s"},
    )
    agents = []
    try:
        engine = engine_of(svc)
        api = _api(svc)
        ids = []
        for name in ("s1", "s2", "s3"):
            agent = make_agent(tmp_path, name)
            agent.enroll(svc.url, svc.enroll_code(f"{name}@example.com"))
            agent.start("--no-reports")
            agents.append(agent)
            ids.append(agent.cli_json("id")["device_id"])
        # A sign-in notices staleness at once, before any sweep could run.
        _age(engine, ids[0], 10)
        browser, txn, status = _login(svc, agents[0])
        if status.get("code") != "device_denied":  # pragma: no cover - diagnostics
            pytest.fail(f"{status}\n{svc.log()}")
        device = api.get(f"/devices/{ids[0]}").json()["device"]
        assert device["state"] == "denied"
        assert device["state_reason"].startswith("stale: not seen since ")
        (flag,) = api.get(f"/devices/{ids[0]}/flags").json()["items"]
        assert flag["kind"] == "stale" and flag["evidence"]["stale_after_seconds"] == 7 * 86400
        (denied,) = _events(engine, ids[0], "device.deny")
        assert denied.actor == "system" and denied.details["from"] == "trusted"
        # An admin trusts it again: the staleness clock restarts.
        api.post(f"/devices/{ids[0]}/approve", json={"reason": "back from leave"})
        assert _login(svc, agents[0])[2]["status"] == "verified"

        # The CLI sweep, and the background sweep, deny without any sign-in.
        _age(engine, ids[1], 8)
        _age(engine, ids[2], 30)

        def states():
            return [api.get(f"/devices/{i}").json()["device"]["state"] for i in ids]

        assert _wait(lambda: states() == ["trusted", "denied", "denied"]), states()
        assert _login(svc, agents[1])[2]["code"] == "device_denied"
        for device_id in ids[1:]:
            (event,) = _events(engine, device_id, "device.flag")
            assert event.code == "stale" and event.details["evidence"]["via"] == "sweep"
        _age(engine, ids[0], 9)
        swept = svc.cli_json("devices", "sweep-stale")
        # The background sweep (every second) may have got there first; either way, denied.
        assert [d["device_id"] for d in swept["devices"]] in ([], [ids[0]])
        assert _wait(lambda: states()[0] == "denied")
        assert "no stale devices" in svc.cli("devices", "sweep-stale").stdout
    finally:
        for agent in agents:
            agent.stop()
        svc.stop()


def test_cli_sweep_alone(tmp_path, database_url, engine_of):
    svc = start_service(
        tmp_path, database_url, extra_env={"DEVICETRUST_STALE_SWEEP_INTERVAL": "1h"}
    )
    try:
        agent = make_agent(tmp_path, "old")
        agent.enroll(svc.url, svc.enroll_code("hal@example.com"))
        device_id = agent.cli_json("id")["device_id"]
        engine = engine_of(svc)
        _age(engine, device_id, 31)
        swept = svc.cli_json("devices", "sweep-stale")
        assert swept["policy"] == "deny" and swept["stale_after"] == 30 * 86400
        (entry,) = swept["devices"]
        assert entry["device_id"] == device_id and (entry["from"], entry["to"]) == (
            "trusted",
            "denied",
        )
        with engine.connect() as conn:
            flags = list(conn.execute(select(DeviceFlag).where(DeviceFlag.device_id == device_id)))
        assert [f.kind for f in flags] == ["stale"]
        assert svc.cli("devices", "flags", device_id).stdout.startswith(f"#{flags[0].id} stale")
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("hw_uuid", "serial"),
    [
        ("03000200-0400-0500-0006-000700080009", "To be filled by O.E.M."),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "Default string"),
    ],
)
def test_firmware_placeholders_are_not_one_machine(
    tmp_path, sqlite_url, engine_of, hw_uuid, serial
):
    """Two laptops whose firmware left the vendor's placeholder ids are two devices."""
    svc = start_service(tmp_path, sqlite_url)
    try:
        results = []
        for name, email in (("ann", "ann@example.com"), ("bob", "bob@example.com")):
            agent = make_agent(tmp_path, name)
            agent.env["DEVICETRUST_AGENT_HARDWARE_UUID"] = hw_uuid
            agent.env["DEVICETRUST_AGENT_SERIAL"] = serial
            result = agent.enroll(svc.url, svc.enroll_code(email))
            results.append((result["state"], agent.cli_json("id")["device_id"]))
        assert [state for state, _ in results] == ["trusted", "trusted"]
        engine = engine_of(svc)
        for _, device_id in results:
            assert _events(engine, device_id, "device.flag") == []
    finally:
        svc.stop()
