"""Webhooks end to end: the real service (dispatcher on), a real agent, a real receiver.

Decisions made through the admin API and a compliance change from a real
agent report reach a loopback receiver, signed so that the documented verifier
accepts them; failing receivers are retried on the configured schedule and the
delivery log (API and console page) shows it; a refused decision sends nothing.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.admin_helpers import csrf_of
from tests.procs import free_port, make_agent, start_service
from tests.webhook_receiver import Receiver

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "posture" / "linux"
CHECK = """\
id: system-disk-encrypted
title: System disk is encrypted
description: The system volume is encrypted at rest.
platforms: [linux, macos, windows]
severity: critical
expression: disk_encryption.system_volume_encrypted
enforcement: block
max_fact_age: 1h
remediation:
  default: Encrypt the system disk.
"""
DELAYS = "0.5 1 2"  # seconds after failed attempts 1, 2, 3: four attempts in all
ENV = {
    "DEVICETRUST_WEBHOOK_POLL": "0.1",
    "DEVICETRUST_WEBHOOK_RETRY_DELAYS": DELAYS,
    "DEVICETRUST_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
}


def _api(svc, name: str = "hooks") -> httpx.Client:
    token = svc.cli_json("api-token", "create", name, "--scope", "write")["token"]
    return httpx.Client(
        base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _add(api: httpx.Client, receiver: Receiver, path: str, mode: str = "ok", **body):
    hook = receiver.add(path, mode)
    resp = api.post("/webhooks", json={"url": receiver.url(path), **body})
    assert resp.status_code == 201, resp.text
    hook.secret = resp.json()["secret"]
    assert hook.secret.startswith("whsec_")
    return resp.json()["endpoint"]["id"]


def _deliveries(api: httpx.Client, **query) -> list[dict]:
    resp = api.get("/webhook-deliveries", params=query)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def _wait_status(api, delivery_filter: dict, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = _deliveries(api, **delivery_filter)
        if items and items[0]["status"] == status:
            return items[0]
        time.sleep(0.1)
    raise AssertionError(f"no {status} delivery for {delivery_filter}: {items}")


@pytest.fixture
def checks_dir(tmp_path):
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "system-disk-encrypted.yaml").write_text(CHECK)
    return checks


def test_decisions_and_a_compliance_change_reach_the_receiver_signed(
    tmp_path, database_url, checks_dir
):
    port = free_port()
    svc = start_service(
        tmp_path,
        database_url,
        agent_ports=[port],
        extra_env={
            **ENV,
            "DEVICETRUST_CHECKS_DIR": str(checks_dir),
            "DEVICETRUST_BUILTIN_CHECKS": "none",
        },
    )
    agent = make_agent(tmp_path, "hooked", port=port)
    device_dir = tmp_path / "recorded-device"
    shutil.copytree(FIXTURES / "unencrypted", device_dir, symlinks=True)
    try:
        with Receiver() as receiver:
            api = _api(svc)
            _add(api, receiver, "/all")
            only_id = _add(api, receiver, "/revoked-only", event_types=["device.revoked"])

            agent.enroll(svc.url, svc.enroll_code("kai@example.com"))
            device_id = agent.cli_json("id")["device_id"]
            registered = receiver.wait("/all", 1)[0]
            assert registered.verified == registered.headers["webhook-id"]
            assert registered.payload["type"] == "device.registered"
            assert registered.payload["data"]["device_id"] == device_id
            assert registered.payload["data"]["details"]["state"] == "trusted"  # TOFU
            user_id = registered.payload["data"]["user_id"]

            # A real report of an unencrypted disk: the server evaluates it -> compliance event.
            agent.start("--replay", str(device_dir))
            compliance = receiver.wait("/all", 2)[1]
            assert compliance.verified and compliance.error is None
            assert compliance.payload["type"] == "device.compliance_changed"
            assert compliance.payload["data"]["device_id"] == device_id
            assert compliance.payload["data"]["details"]["changes"] == [
                {"check": "system-disk-encrypted", "from": None, "to": "FAIL"}
            ]

            # An admin revokes the device through the API.
            resp = api.post(f"/devices/{device_id}/revoke", json={"reason": "laptop stolen"})
            assert resp.status_code == 200, resp.text
            revoked = receiver.wait("/all", 3)[2]
            only = receiver.wait("/revoked-only", 1)[0]
            for got in (revoked, only):
                assert got.verified == got.headers["webhook-id"]
                assert got.headers["content-type"] == "application/json"
                assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
                body = got.payload
                assert body["type"] == "device.revoked"
                assert body["id"] == got.headers["webhook-id"]
                assert body["data"] == {
                    "device_id": device_id,
                    "user_id": user_id,
                    "actor": "api:hooks",
                    "action": "device.revoke",
                    "details": {"from": "trusted", "to": "revoked", "reason": "laptop stolen"},
                }
            # One event, one id, signed separately for each endpoint's secret.
            assert revoked.headers["webhook-id"] == only.headers["webhook-id"]
            assert revoked.headers["webhook-signature"] != only.headers["webhook-signature"]

            # A refused decision (revoking a revoked device: 409) rolls back: no event.
            again = api.post(f"/devices/{device_id}/revoke", json={"reason": "twice"})
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "bad_transition"
            # Nothing was queued for it: a test event sent afterwards is delivered,
            # and nothing else reached the receivers meanwhile.
            assert api.post(f"/webhooks/{only_id}/test").status_code == 202
            receiver.wait("/revoked-only", 2)
            assert len(receiver.hooks["/all"].received) == 3
            assert len(receiver.hooks["/revoked-only"].received) == 2
            revoked_log = _deliveries(api, event_type="device.revoked")
            assert len(revoked_log) == 2  # one per endpoint, none for the refused one
            assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in revoked_log)
            assert {d["event_id"] for d in revoked_log} == {revoked.headers["webhook-id"]}
        assert "Traceback" not in svc.log()
    finally:
        agent.stop()
        svc.stop()


def _console(svc) -> httpx.Client:
    token = svc.cli_json("admin", "bootstrap")["token"]
    client = httpx.Client(base_url=svc.url, timeout=10)
    csrf = csrf_of(client.get("/admin/bootstrap").text)
    resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 303, resp.text
    return client


def test_failures_are_retried_with_backoff_and_shown_in_the_delivery_log(tmp_path, database_url):
    # Two gunicorn workers, two dispatchers: each attempt is still made exactly once.
    svc = start_service(tmp_path, database_url, extra_env=ENV, workers=2)
    try:
        with Receiver() as receiver:
            api = _api(svc)
            flaky = _add(api, receiver, "/flaky", "fail:2", description="fails twice")
            dead = _add(api, receiver, "/dead", "fail")
            assert api.post(f"/webhooks/{flaky}/test").status_code == 202
            assert api.post(f"/webhooks/{dead}/test").status_code == 202

            got = receiver.wait("/flaky", 3)
            assert all(r.verified for r in got)
            assert len({r.headers["webhook-id"] for r in got}) == 1  # same event each time
            assert len({r.body for r in got}) == 1
            log = _wait_status(api, {"webhook_id": flaky}, "delivered")
            assert log["attempts"] == 3 and log["last_status_code"] == 204
            assert log["event_type"] == "webhook.test" and log["delivered_at"]

            tries = receiver.wait("/dead", 4)
            log = _wait_status(api, {"webhook_id": dead}, "failed")
            assert log["attempts"] == 4 and log["last_status_code"] == 500
            assert log["last_error"] == "HTTP 500" and log["next_attempt_at"] is None
            gaps = [b.at - a.at for a, b in zip(tries, tries[1:], strict=False)]
            assert gaps[0] >= 0.5 and gaps[1] >= 1.0 and gaps[2] >= 2.0, gaps
            assert gaps[0] < gaps[1] < gaps[2], gaps
            assert len(receiver.hooks["/dead"].received) == 4  # given up: no fifth attempt
            assert len(receiver.hooks["/flaky"].received) == 3  # delivered: no more
            assert _deliveries(api, status="failed")[0]["id"] == log["id"]

            # The console's delivery log shows both, with attempts, codes and errors.
            console = _console(svc)
            page = console.get("/admin/webhooks")
            assert page.status_code == 200
            html = page.text
            assert 'href="/admin/webhooks"' in html and "Webhooks" in html  # in the nav
            rows = re.findall(r"<tr>\s*<td>\d+</td>.*?</tr>", html, re.S)
            cells = [re.sub(r"<[^>]+>", " ", r) for r in rows if "webhook.test" in r]
            assert any("delivered" in c and " 3 " in c and "204" in c for c in cells), cells
            assert any("failed" in c and " 4 " in c and "HTTP 500" in c for c in cells), cells
            assert "whsec_" not in html  # secrets are never listed

            # Redeliver the failed one from the console: same event, new delivery.
            csrf = csrf_of(html)
            resp = console.post(
                f"/admin/webhook-deliveries/{log['id']}/redeliver", data={"csrf": csrf}
            )
            assert resp.status_code == 303
            receiver.hooks["/dead"].mode = "ok"
            again = receiver.wait("/dead", 5)[4]
            assert again.verified == tries[0].headers["webhook-id"]
            assert _wait_status(api, {"webhook_id": dead}, "delivered")["attempts"] == 1
        assert "Traceback" not in svc.log()
    finally:
        svc.stop()
