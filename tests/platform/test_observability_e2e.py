"""Signals of a real run: the service (gunicorn, two workers, multiprocess metrics) and
real agents go through enrollment, a sign-in, a trusted-device approval code, a SCIM
create and an admin-API call. Then: /metrics is 404 without the token and counts what
happened (on the service's listener with the token, and on the separate listener);
every log line is JSON with the request id the response carried; and no secret, code
or token the run created appears in any log of any process."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import httpx
import pytest

from tests.procs import free_port, make_agent, start_service
from tests.scim_helpers import scim_client, user_body

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
METRICS_TOKEN = "metrics-token-" + "x7" * 16
SECRET_KEY = "session-key-" + "q9" * 20


def _login(svc, agent, browser, secrets_seen, txn=None):
    if txn is None:
        txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
    secrets_seen.append(txn)
    challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answer = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
        timeout=10,
    )
    if answer.status_code == 200:
        browser.post(f"/login/{txn}/response", content=answer.json()["response"])
    status: dict = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return txn, status


def _metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = values.get(name, 0.0) + float(value)
    return values


def _sum(values: dict[str, float], prefix: str, *labels: str) -> float:
    return sum(
        v for k, v in values.items() if k.startswith(prefix) and all(lab in k for lab in labels)
    )


def _wait_for_report(svc) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while True:
        got = httpx.get(f"{svc.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert got.status_code == 200
        values = _metrics(got.text)
        if _sum(values, "devicetrust_reports_ingested_total") >= 1:
            return values
        assert time.monotonic() < deadline, "no report counted:\n" + got.text
        time.sleep(0.3)


@pytest.fixture
def service(tmp_path, postgres_url):
    listen = free_port()
    svc = start_service(
        tmp_path,
        postgres_url,
        workers=2,
        extra_env={
            "DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval",
            "DEVICETRUST_BUILTIN_CHECKS": "agent-current",  # notify only: never holds a sign-in
            "DEVICETRUST_METRICS_TOKEN": METRICS_TOKEN,
            "DEVICETRUST_METRICS_LISTEN": f"127.0.0.1:{listen}",
            "DEVICETRUST_SECRET_KEY": SECRET_KEY,
            "DEVICETRUST_LOG_LEVEL": "DEBUG",
        },
    )
    svc.metrics_port = listen
    yield svc
    svc.stop()


@pytest.mark.postgres
def test_a_full_run_is_counted_logged_with_request_ids_and_leaks_nothing(service, tmp_path):
    svc = service
    created: list[str] = [METRICS_TOKEN, SECRET_KEY]  # every secret this run makes

    # Enrollment: A is trusted (first device), B waits for a code from A.
    code_a, code_b = svc.enroll_code("lee@example.com"), svc.enroll_code("lee@example.com")
    created += [code_a, code_b]
    a, b = make_agent(tmp_path, "a-lee"), make_agent(tmp_path, "b-lee")
    assert a.enroll(svc.url, code_a)["state"] == "trusted"
    assert b.enroll(svc.url, code_b)["state"] == "pending"
    a.start()
    b.start("--no-approvals")
    try:
        # A's first report is in before its sign-in (else the check has no facts yet).
        values = _wait_for_report(svc)
        assert _sum(values, "devicetrust_reports_ingested_total") >= 1
        # A sign-in on A.
        browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
        txn, status = _login(svc, a, browser, created)
        assert status["status"] == "verified", svc.log()
        done = browser.get(f"/login/{txn}/continue")
        assert "Device verified" in done.text
        created += [c.value for c in browser.cookies.jar if c.value]

        # B's sign-in waits; the code shown on A lets it in.
        browser_b = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
        txn_b, status = _login(svc, b, browser_b, created)
        assert status["code"] == "device_pending"
        shown = a.cli_json("approve")["requests"][0]["code"]
        created += [shown, shown.replace("-", "")]
        page = browser_b.get(f"/login/{txn_b}/approve")
        wrong = "ABCD-EFGH" if shown != "ABCD-EFGH" else "HGFE-DCBA"
        created.append(wrong)
        browser_b.post(
            f"/login/{txn_b}/approve",
            data={"csrf": CSRF.search(page.text).group(1), "code": wrong, "action": "code"},
        )
        shown = a.cli_json("approve")["requests"][0]["code"]  # a wrong code replaces it
        created += [shown, shown.replace("-", "")]
        page = browser_b.get(f"/login/{txn_b}/approve")
        approved = browser_b.post(
            f"/login/{txn_b}/approve",
            data={"csrf": CSRF.search(page.text).group(1), "code": shown, "action": "code"},
        )
        assert approved.status_code == 303, approved.text
        created += [c.value for c in browser_b.cookies.jar if c.value]

        # SCIM and the admin API, with their tokens.
        scim_token = svc.cli_json("scim-token", "create", "idp")["token"]
        api_token = svc.cli_json("api-token", "create", "ops", "--scope", "read")["token"]
        created += [scim_token, api_token]
        with scim_client(svc, scim_token) as scim:
            assert scim.post("/Users", json=user_body("kim@example.com")).status_code == 201
        listed = httpx.get(
            f"{svc.url}/api/v1/devices", headers={"Authorization": f"Bearer {api_token}"}
        )
        assert listed.status_code == 200
        rid = listed.headers["X-Request-ID"]

        # /metrics: hidden without the token, counted with it, and on the separate listener.
        assert httpx.get(f"{svc.url}/metrics").status_code == 404
        wrong_token = httpx.get(f"{svc.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong_token.status_code == 404
        got = httpx.get(f"{svc.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert got.status_code == 200
        values = _metrics(got.text)
        assert _sum(values, "devicetrust_signins_total", 'outcome="verified"') == 1
        assert _sum(values, "devicetrust_signins_total", 'code="device_pending"') == 1
        assert _sum(values, "devicetrust_challenges_total", 'result="consumed"') == 1
        assert _sum(values, "devicetrust_challenges_total", 'code="device_pending"') >= 1
        assert _sum(values, "devicetrust_verify_duration_seconds_count") >= 2
        assert _sum(values, "devicetrust_signin_duration_seconds_count", 'kind="local"') >= 1
        assert _sum(values, "devicetrust_scim_requests_total", 'op="create"', 'status="201"') == 1
        assert _sum(values, "devicetrust_check_results_total") >= 1
        assert _sum(values, "devicetrust_http_requests_total", 'status="2xx"') >= 5
        assert _sum(values, "devicetrust_db_pool_connections", 'state="open"') >= 1
        with urllib.request.urlopen(  # noqa: S310 - loopback
            f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=5
        ) as separate:
            assert b"devicetrust_signins_total" in separate.read()
    finally:
        b.stop()
        a.stop()
        svc.stop()

    service_log = svc.log()
    records = []
    for line in service_log.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    access = [r for r in records if r["logger"] == "devicetrust.access"]
    assert len(access) >= 20
    assert any(r["request_id"] == rid and r["route"] == "/api/v1/devices" for r in access)
    assert all(re.fullmatch(r"[0-9a-f]{16}|[A-Za-z0-9._:-]{8,64}", r["request_id"]) for r in access)

    logs = service_log + a.log() + b.log()
    for value in {c for c in created if c and len(c) >= 6}:
        for form in {value, value.lower(), value.upper()}:
            assert form not in logs, f"a secret the run made is in a log: {value[:4]}..."
