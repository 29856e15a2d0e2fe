"""Registration policies and trusted-device approval, with the real service and real agents.

Agent A is enrolled and trusted; agent B enrolls later for the same user. Under
``trusted_device_approval`` B waits and ``devicetrust-agent approve`` on A shows
a code (fetched with a signed poll, sealed to A's box key). The test plays B's
browser over HTTP: the login page sends it to the code form; a wrong code burns
an attempt and replaces the code; the right one trusts B and the same sign-in
completes with a fresh device answer. Also: exhaustion, expiry and reissue,
devices that are not trusted get no notices, TOFU, admin approval, and a group
policy set through the admin API overriding the global one. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest
from sqlalchemy import select, text, update

from idp_service.devices.approval_tables import ApprovalRequest
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent, Device, User
from tests.procs import make_agent, start_service

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def tda_service(tmp_path, database_url):
    svc = start_service(
        tmp_path,
        database_url,
        extra_env={
            "DEVICETRUST_REGISTRATION_POLICY": "trusted_device_approval",
            "DEVICETRUST_APPROVAL_ATTEMPTS": "3",
        },
    )
    yield svc
    svc.stop()


def _engine(svc):
    return make_engine(svc.env["DEVICETRUST_DATABASE_URL"])


def _login(svc, agent, browser=None, txn=None):
    """Play the browser: (re)start a sign-in, offer a challenge to the agent, forward it."""
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
    if answer.status_code == 200:
        browser.post(f"/login/{txn}/response", content=answer.json()["response"])
    status: dict = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = browser.get(f"/login/{txn}/status").json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return browser, txn, status


def _codes(agent) -> list[dict]:
    return agent.cli_json("approve")["requests"]


def _submit(browser, txn, code, action="code"):
    page = browser.get(f"/login/{txn}/approve")
    assert page.status_code == 200, page.text
    csrf = CSRF.search(page.text).group(1)
    return browser.post(
        f"/login/{txn}/approve", data={"csrf": csrf, "code": code, "action": action}
    )


def _wrong(code: str) -> str:
    return "ABCD-EFGH" if code != "ABCD-EFGH" else "HGFE-DCBA"


def _pair(svc, tmp_path, user):
    a = make_agent(tmp_path, "a-" + user.split("@")[0])
    assert a.enroll(svc.url, svc.enroll_code(user))["state"] == "trusted"
    b = make_agent(tmp_path, "b-" + user.split("@")[0])
    assert b.enroll(svc.url, svc.enroll_code(user))["state"] == "pending"
    return a, b


def test_trusted_device_code_approves_the_new_device(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "erin@example.com")
    a_id, b_id = a.cli_json("id")["device_id"], b.cli_json("id")["device_id"]
    b.start("--no-approvals")
    try:
        shown = _codes(a)
        assert len(shown) == 1
        first = shown[0]
        assert first["device"]["hostname"] and first["device"]["serial"].startswith("SN-B-ERIN")
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", first["code"])
        assert "code: " + first["code"] in a.cli("approve").stdout  # the plain text form

        browser, txn, status = _login(svc, b)
        assert status["code"] == "device_pending"
        assert status["approve"] == f"/login/{txn}/approve"
        page = browser.get(f"/login/{txn}/approve")
        assert "Code shown on your other device" in page.text and "3 attempts left" in page.text

        wrong = _submit(browser, txn, _wrong(first["code"]))
        assert wrong.status_code == 403
        assert "not right" in wrong.text and "2 attempts left" in wrong.text
        second = _codes(a)[0]
        assert second["request_id"] == first["request_id"] and second["code"] != first["code"]
        stale = _submit(browser, txn, first["code"])  # the burnt code is dead
        assert stale.status_code == 403 and "1 attempt left" in stale.text
        latest = _codes(a)[0]["code"]
        assert latest not in (first["code"], second["code"])

        # Normalised: lower case and other separators work.
        done = _submit(browser, txn, " " + latest.lower().replace("-", " ") + " ")
        assert done.status_code == 303 and done.headers["location"] == f"/login/{txn}"
        assert _codes(a) == []  # the request is closed

        _, _, status = _login(svc, b, browser, txn)  # same sign-in, fresh answer
        assert status["status"] == "verified", (status, svc.log())
        page = browser.get(f"/login/{txn}/continue")
        assert "Device verified" in page.text and "erin@example.com" in page.text

        engine = _engine(svc)
        with engine.connect() as conn:
            assert conn.execute(select(Device.state).where(Device.id == b_id)).scalar_one() == (
                "trusted"
            )
            approve = conn.execute(
                select(AuditEvent).where(AuditEvent.action == "device.approve")
            ).one()
            register = conn.execute(
                select(AuditEvent.details).where(
                    AuditEvent.action == "device.register", AuditEvent.device_id == b_id
                )
            ).scalar_one()
            every = conn.execute(select(AuditEvent.details)).scalars().all()
            req = conn.execute(select(ApprovalRequest)).one()
        engine.dispose()
        assert approve.actor == f"trusted-device:{a_id}" and approve.device_id == b_id
        assert approve.details["method"] == "trusted_device_code"
        assert register["policy"] == "trusted_device_approval"
        assert register["policy_source"] == "env"
        assert req.status == "approved" and req.attempts == 3
        dump = json.dumps(every).upper()
        for code in (first["code"], second["code"], latest):
            assert code not in dump and code.replace("-", "") not in dump
    finally:
        b.stop()


def test_exhaustion_expiry_reissue_and_who_gets_notices(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "frank@example.com")
    b_id = b.cli_json("id")["device_id"]
    b.start("--no-approvals")
    try:
        # A pending device gets no notices.
        refused = b.cli("approve", "--json", check=False)
        assert refused.returncode != 0 and "device_not_trusted" in refused.stderr

        browser, txn, _ = _login(svc, b)
        code = _codes(a)[0]["code"]
        engine = _engine(svc)
        with engine.begin() as conn:
            conn.execute(update(ApprovalRequest).values(expires_at=ApprovalRequest.created_at))
        assert _codes(a) == []  # expired codes are not delivered
        page = browser.get(f"/login/{txn}/approve")
        assert "The code has expired" in page.text and "Send a new code" in page.text
        expired = _submit(browser, txn, code)
        assert "The code has expired" in expired.text
        again = _submit(browser, txn, "", action="reissue")
        assert again.status_code == 200 and "A new code was sent" in again.text
        assert "3 attempts left" in again.text  # expiry does not count as an attempt
        fresh = _codes(a)[0]["code"]
        assert fresh != code

        for left in (2, 1):
            r = _submit(browser, txn, _wrong(fresh))
            assert f"{left} attempt" in r.text
            fresh = _codes(a)[0]["code"]
        last = _submit(browser, txn, _wrong(fresh))
        assert "Too many wrong codes" in last.text and "Ask your IT administrator" in last.text
        assert _codes(a) == []
        with engine.connect() as conn:
            req = conn.execute(select(ApprovalRequest)).one()
            state = conn.execute(select(Device.state).where(Device.id == b_id)).scalar_one()
            actions = conn.execute(
                select(AuditEvent.action, AuditEvent.code).where(
                    AuditEvent.action.like("approval.%")
                )
            ).all()
        assert req.status == "exhausted" and state == "pending"
        assert ("approval.code", "approval_exhausted") in actions
        assert ("approval.reissue", None) in actions
        assert ("approval.code", "approval_expired") in actions
        # The code form is gone; an admin still decides.
        assert "no longer be approved with a code" in browser.get(f"/login/{txn}/approve").text
        svc.cli("devices", "approve", b_id, "--reason", "checked by phone")

        # A revoked device gets no notices either.
        a_id = a.cli_json("id")["device_id"]
        svc.cli("devices", "revoke", a_id, "--reason", "lost")
        refused = a.cli("approve", "--json", check=False)
        assert refused.returncode != 0 and "device_not_trusted" in refused.stderr
        engine.dispose()
    finally:
        b.stop()


def test_admin_decision_closes_the_request(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "gina@example.com")
    assert len(_codes(a)) == 1
    svc.cli("devices", "deny", b.cli_json("id")["device_id"], "--reason", "not hers")
    assert _codes(a) == []
    engine = _engine(svc)
    with engine.connect() as conn:
        assert conn.execute(select(ApprovalRequest.status)).scalar_one() == "closed"
    engine.dispose()


def test_tofu_admin_approval_and_a_group_policy_set_through_the_api(tmp_path, database_url):
    svc = start_service(tmp_path, database_url)  # global default: tofu
    try:
        token = json.loads(
            svc.cli("api-token", "create", "ops", "--scope", "write", "--json").stdout
        )["token"]
        api = httpx.Client(
            base_url=svc.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        # TOFU: first trusted, second pending without any code.
        a, b = _pair(svc, tmp_path, "hana@example.com")
        assert _codes(a) == []

        # The run-time global setting overrides the environment: admin approval.
        r = api.put("/policies/global", json={"policy": "admin_approval"})
        assert r.status_code == 200 and r.json() == {
            "scope": "global",
            "group_id": None,
            "before": None,
            "after": "admin_approval",
        }
        solo = make_agent(tmp_path, "solo")
        assert solo.enroll(svc.url, svc.enroll_code("ivan@example.com"))["state"] == "pending"

        # A group two levels up says tofu, the user's own group says trusted_device_approval.
        engine = _engine(svc)
        with engine.begin() as conn:
            ids = {n: str(uuid.uuid4()) for n in ("eng", "company")}
            for name, gid in ids.items():
                conn.execute(
                    Group.__table__.insert().values(
                        id=gid,
                        display_name=name,
                        display_name_key=name,
                        version=1,
                        created_at=text("CURRENT_TIMESTAMP"),
                        updated_at=text("CURRENT_TIMESTAMP"),
                    )
                )
            user_id = conn.execute(
                select(User.id).where(User.user_name_lower == "jo@example.com")
            ).scalar_one_or_none()
        svc.cli("users", "add", "jo@example.com")
        with engine.begin() as conn:
            user_id = conn.execute(
                select(User.id).where(User.user_name_lower == "jo@example.com")
            ).scalar_one()
            conn.execute(
                GroupMember.__table__.insert(),
                [
                    {"group_id": ids["eng"], "value": user_id, "type": "User"},
                    {"group_id": ids["company"], "value": ids["eng"], "type": "Group"},
                ],
            )
        assert api.put("/policies/groups/company", json={"policy": "tofu"}).status_code == 200
        first = make_agent(tmp_path, "jo1")
        out = first.enroll(svc.url, svc.enroll_code("jo@example.com"))
        assert out["state"] == "trusted"  # nested group's tofu beats the global admin_approval
        r = api.put(f"/policies/groups/{ids['eng']}", json={"policy": "trusted_device_approval"})
        assert r.status_code == 200 and r.json()["after"] == "trusted_device_approval"
        second = make_agent(tmp_path, "jo2")
        assert second.enroll(svc.url, svc.enroll_code("jo@example.com"))["state"] == "pending"
        assert len(_codes(first)) == 1  # the direct group's policy applied

        listing = api.get("/policies").json()
        assert listing["global"] == {
            "policy": "admin_approval",
            "source": "setting",
            "env_default": "tofu",
            "updated_at": listing["global"]["updated_at"],
            "updated_by": "api:ops",
        }
        assert {(g["group"], g["policy"]) for g in listing["groups"]} == {
            ("company", "tofu"),
            ("eng", "trusted_device_approval"),
        }
        # Bad input: stable codes, nothing but audit written.
        assert api.put("/policies/global", json={"policy": "yolo"}).json()["error"]["code"] == (
            "invalid_body"
        )
        missing = api.put("/policies/groups/nope", json={"policy": "tofu"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "group_not_found"
        cleared = api.delete(f"/policies/groups/{ids['eng']}").json()
        assert cleared["before"] == "trusted_device_approval" and cleared["after"] is None
        with engine.connect() as conn:
            changes = conn.execute(
                select(AuditEvent.action, AuditEvent.actor, AuditEvent.details)
                .where(AuditEvent.action.like("policy.%"))
                .order_by(AuditEvent.id)
            ).all()
            registered = (
                conn.execute(
                    select(AuditEvent.details)
                    .where(AuditEvent.action == "device.register", AuditEvent.outcome == "ok")
                    .order_by(AuditEvent.id)
                )
                .scalars()
                .all()
            )
        engine.dispose()
        assert [c.action for c in changes] == ["policy.set"] * 3 + ["policy.clear"]
        assert all(c.actor == "api:ops" for c in changes)
        assert changes[-1].details["before"] == "trusted_device_approval"
        assert [d["policy_source"] for d in registered][-3:] == [
            "global",
            f"group:{ids['company']}",
            f"group:{ids['eng']}",
        ]
        # The CLI shows the same.
        shown = svc.cli_json("policy", "show")
        assert shown["global"]["policy"] == "admin_approval"
        svc.cli("policy", "set", "tofu")
        svc.cli("policy", "clear", "--group", "company")
        assert svc.cli_json("policy", "show")["groups"] == []
    finally:
        svc.stop()


def test_without_javascript_the_waiting_page_links_the_code_form(tda_service, tmp_path):
    svc = tda_service
    a, b = _pair(svc, tmp_path, "kim@example.com")
    b_id = b.cli_json("id")["device_id"]
    b.start("--no-approvals")
    try:
        browser, txn, status = _login(svc, b)
        assert status["code"] == "device_pending" and status["next"] == f"/login/{txn}/continue"
        # The page a browser without JavaScript lands on: plain HTML, no script needed.
        page = browser.get(f"/login/{txn}/continue")
        assert page.status_code == 200 and "Waiting for approval" in page.text
        assert "<script" not in page.text
        assert "open the devicetrust agent on one of your\n  trusted devices" in page.text
        link = re.search(r'<a class="button" id="enter-code" href="([^"]+)">', page.text)
        assert link and link.group(1) == status["approve"] == f"/login/{txn}/approve"

        # Without an open request (closed by an admin decision, say) there is nothing to link.
        engine = _engine(svc)
        with engine.begin() as conn:
            conn.execute(update(ApprovalRequest).values(status="closed"))
        closed = browser.get(f"/login/{txn}/continue").text
        assert "Waiting for approval" in closed and 'id="enter-code"' not in closed
        assert "devicetrust-agent approve" not in closed
        with engine.begin() as conn:
            conn.execute(update(ApprovalRequest).values(status="open"))

        form_page = browser.get(link.group(1))
        assert form_page.status_code == 200
        action = re.search(
            r'<form method="post" action="([^"]+)" autocomplete="off">', form_page.text
        )
        assert action and action.group(1) == link.group(1)
        csrf = CSRF.search(form_page.text).group(1)
        code = _codes(a)[0]["code"]
        done = browser.post(action.group(1), data={"csrf": csrf, "code": code, "action": "code"})
        assert done.status_code == 303 and done.headers["location"] == f"/login/{txn}"
        with engine.connect() as conn:
            state = conn.execute(select(Device.state).where(Device.id == b_id)).scalar_one()
        engine.dispose()
        assert state == "trusted"
    finally:
        b.stop()
