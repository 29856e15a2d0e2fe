"""Re-authentication tokens end to end: the real service, oidc-provider and a real agent.

The agent is enrolled with a code and runs; the global window is 30 days with
``--required``, so every sign-in needs a token or an upstream sign-in. A test
plays the login page with ``requests`` (one cookie jar, the browser): it starts
a plain device check, maybe signs in upstream, hands the challenge to the agent's
loopback channel and waits for the verdict. The agent posts its own callback and
keeps the successor token it gets back in ``reauth.json``. A copy of the state
directory is simulated by putting back an older ``reauth.json``.
"""

from __future__ import annotations

import json
import stat
import time

import pytest
import requests
from sqlalchemy import create_engine, select, update

from idp_service.platform.models import AuditEvent, Device
from idp_service.upstream.tables import ReauthToken
from tests.procs import make_agent
from tests.upstream.support import sign_in, start_login, upstream_stack
from trust_protocol.reauth import token_hash


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reauth")
    agent = make_agent(tmp, "laptop")
    svc, op = upstream_stack(tmp, f"sqlite:///{tmp / 'db.sqlite'}", agent_ports=[agent.port])
    try:
        agent.enroll(svc.url, svc.enroll_code("nora@example.com"))
        svc.cli("reauth", "set", "30d", "--required")
        agent.start("--no-reports")
        yield svc, op, agent
    finally:
        agent.stop()
        svc.stop()
        op.stop()


def engine(svc):
    return create_engine(svc.env["DEVICETRUST_DATABASE_URL"])


def tokens(svc):
    eng = engine(svc)
    try:
        with eng.connect() as conn:
            return conn.execute(select(ReauthToken).order_by(ReauthToken.issued_at)).all()
    finally:
        eng.dispose()


def last_audit(svc, action):
    eng = engine(svc)
    try:
        with eng.connect() as conn:
            return conn.execute(
                select(AuditEvent.outcome, AuditEvent.code, AuditEvent.details)
                .where(AuditEvent.action == action)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            ).first()
    finally:
        eng.dispose()


def stored(agent):
    path = agent.state_dir / "reauth.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_for_token_change(agent, before, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = stored(agent)
        if now is not None and now != before:
            return now
        time.sleep(0.1)
    raise AssertionError(f"the agent kept {before}; log:\n{agent.log()[-2000:]}")


def device_check(svc, op, agent, *, upstream=False, http=None, txn=None):
    """One sign-in: ``(browser, txn, status)``."""
    http = http or requests.Session()
    txn = txn or start_login(http, svc)
    if upstream:
        callback = sign_in(http, svc, op, txn, "nora@example.com")
        assert http.get(callback, allow_redirects=False, timeout=20).status_code == 303
    challenge = http.post(f"{svc.url}/login/{txn}/challenge", json={}, timeout=10).json()
    answer = requests.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge["challenge"]},
        headers={"Origin": svc.url},
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 15
    status: dict = {}
    while time.monotonic() < deadline:
        status = http.get(f"{svc.url}/login/{txn}/status", timeout=10).json()
        if status["status"] != "pending":
            break
        time.sleep(0.1)
    return http, txn, status


def test_token_lifecycle(stack):
    svc, op, agent = stack
    device_id = agent.cli_json("id")["device_id"]

    # 1. No token and no upstream sign-in: the window requires one.
    _, _, status = device_check(svc, op, agent)
    assert (status["status"], status.get("code")) == ("denied", "reverify_required")
    assert stored(agent) is None

    # 2. An upstream sign-in in the sign-in starts a family; the agent keeps the token 0600.
    _, _, status = device_check(svc, op, agent, upstream=True)
    assert status["status"] == "verified", status
    first = wait_for_token_change(agent, None)
    mode = stat.S_IMODE((agent.state_dir / "reauth.json").stat().st_mode)
    assert mode == 0o600
    rows = tokens(svc)
    assert len(rows) == 1 and rows[0].family == first["family"]
    # only the hash, bound to this device's key, is stored
    eng = engine(svc)
    with eng.connect() as conn:
        sign_key = conn.execute(select(Device.sign_key).where(Device.id == device_id)).scalar_one()
    eng.dispose()
    assert first["token"] not in repr(tuple(rows[0]))
    assert rows[0].token_hash == token_hash(first["token"], device_id, sign_key)
    assert last_audit(svc, "reauth.issue")[0] == "ok"

    # 3. Within the window the token signs in without the provider, and rotates.
    _, _, status = device_check(svc, op, agent)
    assert status["status"] == "verified", status
    second = wait_for_token_change(agent, first)
    assert second["family"] == first["family"] and second["token"] != first["token"]
    _, _, status = device_check(svc, op, agent)
    assert status["status"] == "verified", status
    third = wait_for_token_change(agent, second)

    # 4. A copy of an older token, used after its rightful use (its successor used too):
    #    refused, audited as suspicious, the whole family revoked.
    (agent.state_dir / "reauth.json").write_text(json.dumps(first))
    _, _, status = device_check(svc, op, agent)
    assert (status["status"], status.get("code")) == ("denied", "reauth_reused")
    outcome, _, details = last_audit(svc, "reauth.reuse")
    assert outcome == "ok" and details["suspicious"] is True
    family = [r for r in tokens(svc) if r.family == first["family"]]
    assert all(r.revoked_at is not None for r in family)
    # ... and the rightful device's current token is dead too: it must re-verify upstream.
    (agent.state_dir / "reauth.json").write_text(json.dumps(third))
    http, txn, status = device_check(svc, op, agent)
    assert (status["status"], status.get("code")) == ("denied", "reverify_required")

    # 5. Re-verifying upstream in the same sign-in reopens it, and a new family starts.
    resp = http.get(
        f"{svc.url}/upstream/corp/start?txn={txn}&purpose=reverify",
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 303
    callback = _follow_to_callback(http, svc, op, resp.headers["Location"])
    assert http.get(callback, allow_redirects=False, timeout=20).headers["Location"] == (
        f"/login/{txn}"
    )
    _, _, status = device_check(svc, op, agent, http=http, txn=txn)
    assert status["status"] == "verified", status
    fresh = wait_for_token_change(agent, third)
    assert fresh["family"] != first["family"]


def _follow_to_callback(http, svc, op, url):
    import re
    from urllib.parse import urljoin

    for _ in range(12):
        if url.startswith(svc.url + "/upstream/callback"):
            return url
        resp = http.get(url, allow_redirects=False, timeout=10)
        if resp.status_code in (302, 303):
            url = urljoin(url, resp.headers["Location"])
            continue
        form = re.search(r'<form[^>]*action="([^"]+)"', resp.text)
        resp = http.post(
            urljoin(url, form.group(1)),
            data={"prompt": "login", "login": "nora@example.com", "password": "x"},
            allow_redirects=False,
            timeout=10,
        )
        url = urljoin(url, resp.headers["Location"])
    raise AssertionError("no callback")


def fresh_family(svc, op, agent):
    before = stored(agent)
    _, _, status = device_check(svc, op, agent, upstream=True)
    assert status["status"] == "verified", status
    return wait_for_token_change(agent, before)


def revoked_reasons(svc, family):
    return {r.revoked_reason for r in tokens(svc) if r.family == family}


def test_lost_reply_recovers_once_then_a_copy_is_caught(stack):
    svc, op, agent = stack
    start = fresh_family(svc, op, agent)
    _, _, status = device_check(svc, op, agent)
    assert status["status"] == "verified"
    wait_for_token_change(agent, start)
    # The successor's reply is lost: the device still holds the spent token.
    (agent.state_dir / "reauth.json").write_text(json.dumps(start))
    _, _, status = device_check(svc, op, agent)
    assert status["status"] == "verified", status  # the grace rule, once
    recovered = wait_for_token_change(agent, start)
    assert recovered["family"] == start["family"]
    assert last_audit(svc, "reauth.recover")[0] == "ok"
    # The same spent token once more: that is no lost reply but a copy.
    (agent.state_dir / "reauth.json").write_text(json.dumps(start))
    _, _, status = device_check(svc, op, agent)
    assert (status["status"], status.get("code")) == ("denied", "reauth_reused")
    assert "reuse" in revoked_reasons(svc, start["family"])


def test_the_window_elapses_then_upstream_again(stack):
    svc, op, agent = stack
    current = fresh_family(svc, op, agent)
    # Time passes (moved on in the database): the family's end is behind us.
    eng = engine(svc)
    with eng.begin() as conn:
        conn.execute(
            update(ReauthToken)
            .where(ReauthToken.family == current["family"])
            .values(expires_at=ReauthToken.issued_at)
        )
    eng.dispose()
    _, _, status = device_check(svc, op, agent)
    assert (status["status"], status.get("code")) == ("denied", "reverify_required")
    fresh_family(svc, op, agent)


def test_revocation_triggers(stack):
    svc, op, agent = stack
    device_id = agent.cli_json("id")["device_id"]

    family = fresh_family(svc, op, agent)["family"]
    svc.cli("devices", "revoke", device_id, "--reason", "lost")
    assert revoked_reasons(svc, family) >= {"device_revoked"}
    svc.cli("devices", "retrust", device_id, "--reason", "found")
    _, _, status = device_check(svc, op, agent)
    assert status.get("code") == "reverify_required"

    family = fresh_family(svc, op, agent)["family"]
    svc.cli("reauth", "reverify", "--device", device_id)
    assert "reverify" in revoked_reasons(svc, family)
    _, _, status = device_check(svc, op, agent)
    assert status.get("code") == "reverify_required"
    family = fresh_family(svc, op, agent)["family"]  # the upstream sign-in clears the mark
    _, _, status = device_check(svc, op, agent)
    assert status["status"] == "verified"

    family = stored(agent)["family"]
    out = svc.cli_json("reauth", "reverify", "--user", "nora@example.com")
    assert out["devices"] == [device_id] and out["tokens_revoked"] >= 1
    assert "reverify" in revoked_reasons(svc, family)

    # The admin API's re-verify of a device does the same.
    family = fresh_family(svc, op, agent)["family"]
    api = svc.cli_json("api-token", "create", "reauth-test", "--scope", "write")["token"]
    resp = requests.post(
        f"{svc.url}/api/v1/devices/{device_id}/reverify",
        json={"reason": "phished, says the SOC"},
        headers={"Authorization": f"Bearer {api}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["devices"] == [device_id] and resp.json()["tokens_revoked"] >= 1
    assert "reverify" in revoked_reasons(svc, family)
    _, _, status = device_check(svc, op, agent)
    assert status.get("code") == "reverify_required"

    # SCIM deactivation revokes them too.
    family = fresh_family(svc, op, agent)["family"]
    scim = svc.cli_json("scim-token", "create", "reauth-test")["token"]
    headers = {"Authorization": f"Bearer {scim}", "Content-Type": "application/scim+json"}
    found = requests.get(
        f"{svc.url}/scim/v2/Users",
        params={"filter": 'userName eq "nora@example.com"'},
        headers=headers,
        timeout=10,
    ).json()["Resources"][0]
    resp = requests.patch(
        f"{svc.url}/scim/v2/Users/{found['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
        headers=headers,
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert "owner_deactivated" in revoked_reasons(svc, family)
