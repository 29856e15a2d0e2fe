"""Hostile input to the approve ceremony's endpoints, against the real service process.

``POST /agent/v1/notices`` and ``/login/<txn>/approve`` answer bad input with a
4xx and a stable code, never a 500, and write nothing but audit events: no
attempt is burnt, no notice or device changes.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from sqlalchemy import func, select

from idp_service.devices.approval_tables import ApprovalNotice, ApprovalRequest
from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device
from tests.procs import make_agent, start_service
from trust_protocol.encoding import b64e
from trust_protocol.poll import sign_poll

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def world(tmp_path, database_url):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={"DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval"},
    )
    a = make_agent(tmp_path, "ha")
    a.enroll(svc.url, svc.enroll_code("kim@example.com"))
    b = make_agent(tmp_path, "hb")
    b.enroll(svc.url, svc.enroll_code("kim@example.com"))
    yield svc, a, b
    svc.stop()


def _snapshot(svc):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    with engine.connect() as conn:
        snap = (
            conn.execute(select(ApprovalRequest.attempts, ApprovalRequest.status)).all(),
            conn.execute(select(ApprovalNotice.id, ApprovalNotice.code_mac)).all(),
            conn.execute(select(Device.id, Device.state).order_by(Device.id)).all(),
        )
        audits = conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    engine.dispose()
    return snap, audits


def _post(svc, body: bytes) -> httpx.Response:
    return httpx.post(
        svc.url + "/agent/v1/notices",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def test_notice_endpoint_refuses_bad_polls(world):
    svc, a, b = world
    a_id = a.cli_json("id")["device_id"]
    b_id = b.cli_json("id")["device_id"]
    before, audits = _snapshot(svc)
    stranger = SigningKey.generate()
    now = int(time.time())
    cases = [
        (b"", 400, "malformed"),
        (b"not json", 400, "malformed"),
        (b"[]", 400, "malformed"),
        (b"x" * 2000, 413, "too_large"),
        (json.dumps({"poll": "AA"}).encode(), 400, "malformed"),
        (json.dumps(sign_poll("no-such-device", stranger, now)).encode(), 403, "device_unknown"),
        (json.dumps(sign_poll(a_id, stranger, now)).encode(), 403, "bad_poll_signature"),
        (
            json.dumps({**sign_poll(a_id, stranger, now), "extra": 1}).encode(),
            400,
            "malformed",
        ),
    ]
    for body, status, code in cases:
        r = _post(svc, body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body[:60]
    # A real device key, but a stale time; and a pending device, properly signed.
    from agent.keys import load_or_create  # the agents' own keys, from their state directories

    a_keys, _ = load_or_create(a.state_dir)
    b_keys, _ = load_or_create(b.state_dir)
    stale = _post(svc, json.dumps(sign_poll(a_id, a_keys.signing_key, now - 600)).encode())
    assert (stale.status_code, stale.json()["error"]["code"]) == (403, "poll_expired")
    pending = _post(svc, json.dumps(sign_poll(b_id, b_keys.signing_key, now)).encode())
    assert (pending.status_code, pending.json()["error"]["code"]) == (403, "device_not_trusted")
    ok = _post(svc, json.dumps(sign_poll(a_id, a_keys.signing_key, now)).encode())
    assert ok.status_code == 200 and len(ok.json()["notices"]) == 1
    after, audits_after = _snapshot(svc)
    assert after == before
    assert audits_after >= audits + len(cases) + 2


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    blob=st.one_of(
        st.binary(max_size=1200),
        st.builds(
            lambda p, s: json.dumps({"poll": p, "signature": s}).encode(),
            st.text(max_size=100) | st.builds(b64e, st.binary(max_size=80)),
            st.text(max_size=100) | st.builds(b64e, st.binary(min_size=64, max_size=64)),
        ),
    )
)
def test_random_polls_never_crash(world_once, blob):
    r = _post(world_once, blob)
    assert 400 <= r.status_code < 500 and "code" in r.json()["error"]


@pytest.fixture(scope="module")
def world_once(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    svc = start_service(tmp, f"sqlite:///{tmp / 'db.sqlite'}")
    yield svc
    svc.stop()


def test_login_approve_form_refuses_bad_input(world):
    svc, a, b = world
    b.start("--no-approvals")
    try:
        browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=10)
        txn = browser.get("/login").headers["location"].rsplit("/", 1)[-1]
        # Not waiting yet: the page sends the browser back to the login page.
        assert browser.get(f"/login/{txn}/approve").status_code == 303
        challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
        answer = httpx.post(
            f"http://127.0.0.1:{b.port}/v1/challenge",
            json={"challenge": challenge},
            headers={"Origin": svc.url},
            timeout=10,
        )
        browser.post(f"/login/{txn}/response", content=answer.json()["response"])
        page = browser.get(f"/login/{txn}/approve")
        csrf = CSRF.search(page.text).group(1)
        before, _ = _snapshot(svc)
        url = f"/login/{txn}/approve"
        cases = [
            ({"code": "ABCD-EFGH"}, 403, "This form is stale"),  # no CSRF token
            ({"code": "ABCD-EFGH", "csrf": "forged"}, 403, "This form is stale"),
            ({"code": "A" * 65, "csrf": csrf}, 400, "Enter the code"),
            ({"code": "", "csrf": csrf}, 400, "Enter the code"),
            ({"code": "ABCD-EFGH", "csrf": csrf, "action": "wipe"}, 400, "Unknown action"),
            ({"csrf": csrf, "action": "reissue"}, 409, "still valid"),
        ]
        for data, status, text in cases:
            r = browser.post(url, data=data)
            assert r.status_code == status and text in r.text, (data, r.status_code)
        cross = browser.post(
            url, data={"code": "ABCD-EFGH", "csrf": csrf}, headers={"Origin": "https://evil.test"}
        )
        assert cross.status_code == 403
        other = httpx.Client(base_url=svc.url, timeout=10)
        assert other.post(url, data={"code": "ABCD-EFGH", "csrf": csrf}).status_code == 404
        assert other.get(url).status_code == 404
        after, _ = _snapshot(svc)
        assert after == before  # no attempt burnt, nothing changed
        engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
        with engine.connect() as conn:
            codes = (
                conn.execute(select(AuditEvent.code).where(AuditEvent.action == "approval.code"))
                .scalars()
                .all()
            )
        engine.dispose()
        assert {"csrf_invalid", "code_required", "bad_action", "approval_not_expired"} <= set(codes)
    finally:
        b.stop()
