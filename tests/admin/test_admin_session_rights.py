"""An admin console session lasts only as long as the right to it (SQLite and PostgreSQL).

Each request re-reads the admin: a deactivation through SCIM, or removal from
the admin group through a SCIM group PATCH, ends the session at the next
request. Sessions expire (checked through the module's clock), sign-out ends
them, and a device revoked between verification and ``/continue`` gets no
session at all. In process, then with the real service, a real agent answering
the console sign-in and SCIM over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import types

import httpx
import pytest
from sqlalchemy import select
from werkzeug.test import Client

from idp_service import tokens
from idp_service.admin import auth
from idp_service.admin import sessions as admin_sessions
from idp_service.devices import registry
from idp_service.platform.models import AuditEvent, LoginTransaction, utcnow
from scim.app import ScimApplication
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user
from tests.procs import make_agent, start_service
from tests.scim_helpers import GROUP, PATCH_OP, SCIM_JSON

PAGE = "/admin/devices"


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def world(db):
    """alice: an admin with a trusted device; the admin group's id."""
    with db.session() as s:
        alice = make_user(s, "alice@example.com")
        group = make_admin_group(s, alice)
        laptop = make_device(s, alice, state="trusted", hostname="alice-mbp")
        return {"alice": alice.id, "laptop": laptop.id, "group": group.id}


@pytest.fixture
def scim(db):
    """A SCIM client on the same database, as the identity provider would call it."""
    with db.session() as s:
        token = tokens.SCIM.create(s, "idp")
    client = Client(ScimApplication(db, public_url="http://scim.test"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}

    def patch(path: str, *operations: dict) -> int:
        body = json.dumps({"schemas": [PATCH_OP], "Operations": list(operations)})
        return client.patch(path, data=body, headers=headers).status_code

    return patch


def _verified_txn(db, client, user_id: str, device_id: str) -> str:
    """A verified ``admin`` login transaction owned by ``client`` (what the login page yields)."""
    with db.session() as s:
        txn = LoginTransaction(
            id=f"t{time.time_ns()}",
            status="verified",
            user_id=user_id,
            device_id=device_id,
            context={"kind": "admin"},
            expires_at=utcnow() + dt.timedelta(minutes=5),
            verified_at=utcnow(),
        )
        s.add(txn)
    with client.session_transaction() as sess:
        sess["login_txns"] = [txn.id]
    return txn.id


def _signed_in(app, db, world):
    client = app.test_client()
    txn = _verified_txn(db, client, world["alice"], world["laptop"])
    resp = client.get(f"/login/{txn}/continue")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    assert client.get(PAGE).status_code == 200
    return client


def _has_admin_session(client) -> bool:
    with client.session_transaction() as sess:
        return auth.SESSION_KEY in sess


def _signed_out(client) -> None:
    resp = client.get(PAGE)
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/signin"
    assert not _has_admin_session(client)  # the stale session is dropped, not kept
    csrf = csrf_of(client.get("/admin/signin").get_data(as_text=True))
    refused = client.post(f"/admin/devices/{'x' * 8}/action", data={"csrf": csrf, "action": "x"})
    assert refused.status_code == 401


def test_a_scim_deactivated_admin_loses_the_console(app, db, world, scim):
    client = _signed_in(app, db, world)
    op = {"op": "replace", "path": "active", "value": False}
    assert scim(f"/v2/Users/{world['alice']}", op) == 200
    _signed_out(client)


def test_an_admin_removed_from_the_admin_group_loses_the_console(app, db, world, scim):
    client = _signed_in(app, db, world)
    op = {"op": "remove", "path": f'members[value eq "{world["alice"]}"]'}
    assert scim(f"/v2/Groups/{world['group']}", op) == 200
    _signed_out(client)


def test_an_admin_session_expires(app, db, world, monkeypatch):
    client = _signed_in(app, db, world)
    ttl = app.extensions["devicetrust"].settings.admin_session_ttl
    now = utcnow()
    clock = types.SimpleNamespace(now=now + dt.timedelta(seconds=ttl - 5))
    monkeypatch.setattr(admin_sessions, "utcnow", lambda: clock.now)
    assert client.get(PAGE).status_code == 200  # not yet
    clock.now = now + dt.timedelta(seconds=ttl + 5)
    _signed_out(client)


def test_sign_out_ends_the_session(app, db, world):
    client = _signed_in(app, db, world)
    csrf = csrf_of(client.get(PAGE).get_data(as_text=True))
    resp = client.post("/admin/signout", data={"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/signin"
    _signed_out(client)
    with db.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "admin.signout")).all()
        assert [(e.outcome, e.actor) for e in events] == [("ok", "admin:alice@example.com")]


def test_a_device_revoked_before_continue_gets_no_admin_session(app, db, world):
    client = app.test_client()
    txn = _verified_txn(db, client, world["alice"], world["laptop"])
    with db.session() as s:
        registry.change_state(s, world["laptop"], "revoke", reason="lost", actor="test")
    resp = client.get(f"/login/{txn}/continue")
    assert resp.status_code == 403, resp.status_code
    assert resp.headers.get("Location") != "/admin/"
    assert b"device_revoked" in resp.data
    assert not _has_admin_session(client)
    assert client.get(PAGE).status_code == 303
    with db.session() as s:
        outcomes = s.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "admin.login"))
        assert "ok" not in set(outcomes)
        assert s.get(LoginTransaction, txn).status == "denied"


# ---- end to end: the real service, a real agent, SCIM over HTTP ---------------------------


@pytest.fixture
def live(tmp_path, database_url):
    """A running service; alice's real agent is enrolled, she is in the admin group via SCIM."""
    svc = start_service(tmp_path, database_url)
    agent = make_agent(tmp_path, "alice")
    agent.enroll(svc.url, svc.enroll_code("alice@example.com"))
    agent.start("--no-callback")
    token = svc.cli_json("scim-token", "create", "idp")["token"]
    scim_http = httpx.Client(
        base_url=f"{svc.url}/scim/v2",
        headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON},
        timeout=30,
    )
    found = scim_http.get("/Users", params={"filter": 'userName eq "alice@example.com"'})
    alice = found.json()["Resources"][0]["id"]
    group = scim_http.post(
        "/Groups",
        json={
            "schemas": [GROUP],
            "displayName": "devicetrust-admins",
            "members": [{"value": alice}],
        },
    )
    assert group.status_code == 201, group.text
    try:
        yield svc, agent, scim_http, alice, group.json()["id"]
    finally:
        agent.stop()
        svc.stop()


def _verified_admin_signin(svc, agent) -> tuple[httpx.Client, str]:
    """Start a console sign-in in a browser and let the real agent answer it."""
    browser = httpx.Client(base_url=svc.url, follow_redirects=False, timeout=30)
    csrf = csrf_of(browser.get("/admin/signin").text)
    started = browser.post("/admin/signin", data={"csrf": csrf})
    assert started.status_code == 303 and started.headers["location"].startswith("/login/")
    txn = started.headers["location"].rsplit("/", 1)[-1]
    challenge = browser.post(f"/login/{txn}/challenge", json={}).json()["challenge"]
    answer = httpx.post(
        f"http://127.0.0.1:{agent.port}/v1/challenge",
        json={"challenge": challenge},
        headers={"Origin": svc.url},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    done = browser.post(f"/login/{txn}/response", content=answer.json()["response"])
    assert done.json()["status"] == "verified", done.text
    return browser, txn


def _console_open(browser: httpx.Client) -> bool:
    r = browser.get(PAGE)
    assert r.status_code in (200, 303)
    return r.status_code == 200


@pytest.mark.parametrize("change", ["deactivate", "ungroup"])
def test_e2e_scim_changes_end_the_console_session(live, change):
    svc, agent, scim_http, alice, group = live
    browser, txn = _verified_admin_signin(svc, agent)
    assert browser.get(f"/login/{txn}/continue").headers["location"] == "/admin/"
    assert _console_open(browser)
    if change == "deactivate":
        op = {"op": "replace", "path": "active", "value": False}
        r = scim_http.patch(f"/Users/{alice}", json={"schemas": [PATCH_OP], "Operations": [op]})
    else:
        op = {"op": "remove", "path": f'members[value eq "{alice}"]'}
        r = scim_http.patch(f"/Groups/{group}", json={"schemas": [PATCH_OP], "Operations": [op]})
    assert r.status_code in (200, 204), r.text
    assert not _console_open(browser)


def test_e2e_a_device_revoked_before_continue_gets_no_console(live):
    svc, agent, *_ = live
    browser, txn = _verified_admin_signin(svc, agent)
    device_id = agent.cli_json("id")["device_id"]
    svc.cli("devices", "revoke", device_id, "--reason", "stolen")
    resp = browser.get(f"/login/{txn}/continue")
    assert resp.status_code == 403 and "device_revoked" in resp.text
    assert resp.headers.get("location") != "/admin/"
    assert not _console_open(browser)
