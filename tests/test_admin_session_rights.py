"""An admin console session lasts only as long as the right to it (SQLite and PostgreSQL).

Each request re-reads the admin: a deactivation through SCIM, or removal from
the admin group through a SCIM group PATCH, ends the session at the next
request. Sessions expire (checked through the module's clock), sign-out ends
them, and a device revoked between verification and ``/continue`` gets no
session at all.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import types

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from idp_service import registry
from idp_service.admin import auth
from idp_service.storage.models import AuditEvent, LoginTransaction, utcnow
from scim import tokens
from scim.app import ScimApplication
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user
from tests.scim_helpers import PATCH_OP, SCIM_JSON

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
        token = tokens.create(s, "idp")
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
    now = time.time()
    clock = types.SimpleNamespace(time=lambda: now + ttl - 5)
    monkeypatch.setattr(auth, "time", clock)
    assert client.get(PAGE).status_code == 200  # not yet
    clock.time = lambda: now + ttl + 5
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
