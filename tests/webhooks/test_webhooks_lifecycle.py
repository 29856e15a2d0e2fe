"""Events from detection and trusted-device approval reach a real receiver, end to end.

The real service (dispatcher and staleness sweeper on), real agents and a
loopback receiver that checks every signature with the documented verifier, on
SQLite and PostgreSQL:

* a copied agent state directory answering from other hardware is flagged
  (``hardware_mismatch``, with the evidence) and suspended; an admin's approval
  through the API is a ``device.approved``;
* a device approved with a code from the user's trusted device: registered as
  ``pending``, then approved with actor ``trusted-device:<id>``;
* a stale device swept by ``devicetrust devices sweep-stale``: flagged
  (``stale``) and denied by ``system``; its open approval request is closed.

The payloads are compared with the mapping in ``idp_service/webhooks/catalog.py``
and the field lists in docs/events.md.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from idp_service.devices.approval_tables import ApprovalRequest
from idp_service.platform.db import make_engine
from idp_service.platform.models import Device
from idp_service.webhooks.catalog import ALL_TYPES, EVENT_TYPES
from tests.procs import make_agent, start_service
from tests.webhook_receiver import Received, Receiver

ENV = {
    "DEVICETRUST_WEBHOOK_POLL": "0.1",
    "DEVICETRUST_STALE_SWEEP_INTERVAL": "1h",
    "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def _api(svc) -> httpx.Client:
    token = svc.cli_json("api-token", "create", "hooks", "--scope", "write")["token"]
    return httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _subscribe(api: httpx.Client, receiver: Receiver) -> None:
    hook = receiver.add("/all")
    resp = api.post("/webhooks", json={"url": receiver.url("/all")})
    assert resp.status_code == 201, resp.text
    hook.secret = resp.json()["secret"]


def _events(receiver: Receiver, device_id: str, *types: str, timeout: float = 20) -> dict:
    """Wait until ``device_id`` has an event of each of ``types``; every delivery verified."""
    deadline = time.monotonic() + timeout
    got: dict[str, list[Received]] = {}
    while time.monotonic() < deadline:
        with receiver.lock:
            received = list(receiver.hooks["/all"].received)
        got = {}
        for r in received:
            assert r.verified == r.headers["webhook-id"], r.error  # the documented verifier
            if r.payload["data"].get("device_id") == device_id:
                got.setdefault(r.payload["type"], []).append(r)
        if all(t in got for t in types):
            return {t: [r.payload for r in rs] for t, rs in got.items()}
        time.sleep(0.05)
    raise AssertionError(f"{device_id}: wanted {types}, got {sorted(got)}")


def _login(svc, agent, browser=None, txn=None):
    """Play the browser: start a sign-in, offer the challenge to ``agent``, forward its answer."""
    browser = browser or httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
    if txn is None:
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
    status: dict = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return browser, txn, status


def test_catalog_and_docs_list_the_same_events():
    table = re.findall(r"^\| `([a-z_.]+)` \| (?:`([a-z_.]+)`|—) \|", DOCS.read_text(), re.M)
    documented = {event: action for event, action in table}
    assert set(documented) == set(ALL_TYPES)
    assert {a: e for e, a in documented.items() if a} == EVENT_TYPES


def test_clone_is_flagged_and_suspended_then_approved(tmp_path, database_url):
    svc = start_service(tmp_path, database_url, extra_env=ENV)
    original = make_agent(tmp_path, "orig")
    clone = make_agent(tmp_path, "clone")
    try:
        with Receiver() as receiver:
            api = _api(svc)
            _subscribe(api, receiver)
            original.enroll(svc.url, svc.enroll_code("dana@example.com"))
            device_id = original.cli_json("id")["device_id"]
            shutil.copytree(original.state_dir, clone.state_dir)  # same key, other hardware
            clone.start("--no-reports")
            assert _login(svc, clone)[2]["code"] == "device_suspended"

            got = _events(receiver, device_id, "device.flagged", "device.suspended")
            (registered,) = got["device.registered"]
            user_id = registered["data"]["user_id"]
            (flagged,) = got["device.flagged"]
            assert flagged["data"]["actor"] == "system"
            assert flagged["data"]["action"] == "device.flag"
            assert flagged["data"]["user_id"] == user_id
            details = flagged["data"]["details"]
            assert details["kind"] == "hardware_mismatch" and isinstance(details["flag_id"], int)
            evidence = details["evidence"]
            hw = "DEVICETRUST_AGENT_HARDWARE_UUID"
            assert evidence["stored"]["hardware_uuid"] == original.env[hw]
            assert evidence["seen"]["hardware_uuid"] == clone.env[hw]
            assert evidence["seen"]["serial"] == clone.env["DEVICETRUST_AGENT_SERIAL"]
            assert "hardware_uuid" in evidence["differs"]
            assert evidence["via"] in ("browser", "callback")
            (suspended,) = got["device.suspended"]
            assert suspended["data"]["actor"] == "system"
            assert suspended["data"]["details"] == {
                "from": "trusted",
                "to": "suspended",
                "reason": "suspended pending review: hardware_mismatch",
            }

            resp = api.post(f"/devices/{device_id}/approve", json={"reason": "board replaced"})
            assert resp.status_code == 200, resp.text
            (approved,) = _events(receiver, device_id, "device.approved")["device.approved"]
            assert approved["data"] == {
                "device_id": device_id,
                "user_id": user_id,
                "actor": "api:hooks",
                "action": "device.approve",
                "details": {
                    "from": "suspended",
                    "to": "trusted",
                    "reason": "board replaced",
                    "flags_resolved": 1,
                },
            }
        assert "Traceback" not in svc.log()
    finally:
        clone.stop()
        svc.stop()


def test_trusted_device_code_is_an_approval_by_that_device(tmp_path, database_url):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={**ENV, "DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval"},
    )
    a = make_agent(tmp_path, "a")
    b = make_agent(tmp_path, "b")
    try:
        with Receiver() as receiver:
            _subscribe(_api(svc), receiver)
            assert a.enroll(svc.url, svc.enroll_code("erin@example.com"))["state"] == "trusted"
            assert b.enroll(svc.url, svc.enroll_code("erin@example.com"))["state"] == "pending"
            a_id, b_id = a.cli_json("id")["device_id"], b.cli_json("id")["device_id"]
            (registered,) = _events(receiver, b_id, "device.registered")["device.registered"]
            assert registered["data"]["actor"] is None  # the service itself
            details = registered["data"]["details"]
            assert details["state"] == "pending"
            assert details["policy"] == "trusted_device_approval"
            assert details["policy_source"] == "env"
            assert details["approval_request"]

            b.start("--no-approvals")
            browser, txn, status = _login(svc, b)
            assert status["code"] == "device_pending"
            (shown,) = a.cli_json("approve")["requests"]
            page = browser.get(f"/login/{txn}/approve")
            csrf = CSRF.search(page.text).group(1)
            form = {"csrf": csrf, "code": shown["code"], "action": "code"}
            done = browser.post(f"/login/{txn}/approve", data=form)
            assert done.status_code == 303, done.text

            (approved,) = _events(receiver, b_id, "device.approved")["device.approved"]
            data = approved["data"]
            assert data["actor"] == f"trusted-device:{a_id}"
            assert data["user_id"] == registered["data"]["user_id"]
            assert data["details"] == {
                "from": "pending",
                "to": "trusted",
                "method": "trusted_device_code",
                "request_id": details["approval_request"],
                "attempts": 1,
            }
            with receiver.lock:
                bodies = b"".join(r.body for r in receiver.hooks["/all"].received)
            code = shown["code"].encode()
            assert code not in bodies and code.replace(b"-", b"") not in bodies
        assert "Traceback" not in svc.log()
    finally:
        b.stop()
        svc.stop()


@pytest.fixture
def engine_of():
    engines = []

    def make(svc):
        engines.append(make_engine(svc.env["DEVICETRUST_DATABASE_URL"]))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def test_stale_devices_are_flagged_and_denied_by_the_system(tmp_path, database_url, engine_of):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={**ENV, "DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval"},
    )
    try:
        with Receiver() as receiver:
            _subscribe(_api(svc), receiver)
            old = make_agent(tmp_path, "old")
            old.enroll(svc.url, svc.enroll_code("hal@example.com"))
            waiting = make_agent(tmp_path, "waiting")  # pending, with an open code request
            assert waiting.enroll(svc.url, svc.enroll_code("hal@example.com"))["state"] == (
                "pending"
            )
            ids = [old.cli_json("id")["device_id"], waiting.cli_json("id")["device_id"]]
            engine = engine_of(svc)
            last_seen = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
            with engine.begin() as conn:
                conn.execute(update(Device).where(Device.id.in_(ids)).values(last_seen=last_seen))

            swept = svc.cli_json("devices", "sweep-stale")
            assert sorted((d["device_id"], d["from"], d["to"]) for d in swept["devices"]) == sorted(
                [(ids[0], "trusted", "denied"), (ids[1], "pending", "denied")]
            )
            for device_id, before in zip(ids, ("trusted", "pending"), strict=True):
                got = _events(receiver, device_id, "device.flagged", "device.denied")
                (flagged,) = got["device.flagged"]
                assert flagged["data"]["actor"] == "system"
                assert flagged["data"]["details"]["kind"] == "stale"
                evidence = flagged["data"]["details"]["evidence"]
                assert evidence["via"] == "sweep"
                assert evidence["stale_after_seconds"] == 30 * 86400
                (denied,) = got["device.denied"]
                assert denied["data"]["actor"] == "system"
                assert denied["data"]["action"] == "device.deny"
                details = denied["data"]["details"]
                assert (details["from"], details["to"]) == (before, "denied")
                assert details["reason"].startswith("stale: not seen since ")
            # The denied device's code request is closed: no code reaches the trusted one.
            with engine.connect() as conn:
                req = conn.execute(
                    select(ApprovalRequest).where(ApprovalRequest.device_id == ids[1])
                ).one()
            assert req.status == "closed" and req.close_reason == "system: denied"
        assert "Traceback" not in svc.log()
    finally:
        svc.stop()
