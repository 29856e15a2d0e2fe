"""A console cookie is worth nothing once its session has ended (SQLite and PostgreSQL).

The cookie only names a server-side session row. A copy captured before
sign-out, before a SCIM deactivation, an admin-group removal or a device
revocation is refused afterwards, on a page and on a POST (a webhook test),
even after the fact that ended it is restored; bootstrap sessions are checked
on every request too.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sqlalchemy import delete, select
from werkzeug.test import Client

from idp_service import tokens
from idp_service.admin import bootstrap
from idp_service.admin.tables import AdminSession
from idp_service.devices import registry
from idp_service.platform.models import LoginTransaction, utcnow
from idp_service.webhooks import endpoints
from scim.app import ScimApplication
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user
from tests.scim_helpers import PATCH_OP, SCIM_JSON

PAGE = "/admin/webhooks"
COOKIE = "devicetrust_session"


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def world(db):
    with db.session() as s:
        alice = make_user(s, "alice@example.com")
        group = make_admin_group(s, alice)
        laptop = make_device(s, alice, state="trusted", hostname="alice-mbp")
        hook, _ = endpoints.create(s, "https://hooks.example.com/devicetrust", actor="test")
        return {"alice": alice.id, "laptop": laptop.id, "group": group.id, "hook": hook.id}


@pytest.fixture
def scim(db):
    with db.session() as s:
        token = tokens.SCIM.create(s, "idp")
    client = Client(ScimApplication(db, public_url="http://scim.test"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}

    def patch(path: str, *operations: dict) -> int:
        body = json.dumps({"schemas": [PATCH_OP], "Operations": list(operations)})
        return client.patch(path, data=body, headers=headers).status_code

    return patch


def _device_signin(app, db, world):
    client = app.test_client()
    with db.session() as s:
        txn = LoginTransaction(
            id=f"t{time.time_ns()}",
            status="verified",
            user_id=world["alice"],
            device_id=world["laptop"],
            context={"kind": "admin"},
            expires_at=utcnow() + dt.timedelta(minutes=5),
            verified_at=utcnow(),
        )
        s.add(txn)
    with client.session_transaction() as sess:
        sess["login_txns"] = [txn.id]
    resp = client.get(f"/login/{txn.id}/continue")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    return client


def _bootstrap_signin(app, db):
    client = app.test_client()
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    return client


def _capture(client) -> tuple[str, str]:
    """The cookie and the CSRF token an attacker copies out of a signed-in browser."""
    csrf = csrf_of(client.get(PAGE).get_data(as_text=True))
    return client.get_cookie(COOKIE).value, csrf


def _replay(app, captured: tuple[str, str], hook: int) -> tuple[int, int]:
    """A fresh browser with the captured cookie: (GET page status, POST webhook test status)."""
    cookie, csrf = captured
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie, domain="localhost")
    page = thief.get(PAGE).status_code
    thief.set_cookie(COOKIE, cookie, domain="localhost")  # a refused GET dropped it
    sent = thief.post(f"/admin/webhooks/{hook}/test", data={"csrf": csrf}).status_code
    return page, sent


def _tests_sent(db, hook: int) -> int:
    from idp_service.webhooks.tables import WebhookDelivery

    with db.session() as s:
        return len(
            s.scalars(select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == hook)).all()
        )


def test_a_captured_cookie_works_while_the_session_lives(app, db, world):
    client = _device_signin(app, db, world)
    assert _replay(app, _capture(client), world["hook"]) == (200, 303)


def test_a_cookie_captured_before_sign_out_is_refused(app, db, world):
    client = _device_signin(app, db, world)
    captured = _capture(client)
    before = _tests_sent(db, world["hook"])
    csrf = csrf_of(client.get(PAGE).get_data(as_text=True))
    assert client.post("/admin/signout", data={"csrf": csrf}).status_code == 303
    assert _replay(app, captured, world["hook"]) == (303, 401)
    assert _tests_sent(db, world["hook"]) == before
    with db.session() as s:
        reasons = s.scalars(select(AdminSession.ended_reason)).all()
    assert reasons == ["signout"]


def test_a_bootstrap_cookie_captured_before_sign_out_is_refused(app, db, world):
    client = _bootstrap_signin(app, db)
    captured = _capture(client)
    csrf = csrf_of(client.get(PAGE).get_data(as_text=True))
    assert client.post("/admin/signout", data={"csrf": csrf}).status_code == 303
    assert _replay(app, captured, world["hook"]) == (303, 401)


def test_scim_deactivation_ends_the_session_for_good(app, db, world, scim):
    captured = _capture(_device_signin(app, db, world))
    active = {"op": "replace", "path": "active", "value": False}
    assert scim(f"/v2/Users/{world['alice']}", active) == 200
    active["value"] = True
    assert scim(f"/v2/Users/{world['alice']}", active) == 200
    with db.session() as s:  # reactivation sent the laptop back to approval; approve it
        registry.change_state(s, world["laptop"], "approve", reason="back", actor="test")
    assert _replay(app, captured, world["hook"]) == (303, 401)


def test_device_revocation_ends_the_session_for_good(app, db, world):
    captured = _capture(_device_signin(app, db, world))
    with db.session() as s:
        registry.change_state(s, world["laptop"], "revoke", reason="lost", actor="test")
    with db.session() as s:
        registry.change_state(s, world["laptop"], "retrust", reason="found", actor="test")
    assert _replay(app, captured, world["hook"]) == (303, 401)


def test_admin_group_removal_ends_the_session_for_good(app, db, world, scim):
    captured = _capture(_device_signin(app, db, world))
    remove = {"op": "remove", "path": f'members[value eq "{world["alice"]}"]'}
    assert scim(f"/v2/Groups/{world['group']}", remove) == 200
    # Put back before the cookie is used again: the removal ended the session already.
    add = {"op": "add", "path": "members", "value": [{"value": world["alice"]}]}
    assert scim(f"/v2/Groups/{world['group']}", add) == 200
    assert _replay(app, captured, world["hook"]) == (303, 401)
    with db.session() as s:
        assert s.scalars(select(AdminSession.ended_reason)).all() == ["not_admin"]


def test_a_recheck_that_fails_ends_the_session(app, db, world):
    """A membership lost outside SCIM is caught by the request's recheck, which ends the row."""
    from idp_service.directory.tables import GroupMember

    captured = _capture(_device_signin(app, db, world))
    with db.session() as s:
        s.execute(
            delete(GroupMember).where(
                GroupMember.group_id == world["group"], GroupMember.value == world["alice"]
            )
        )
    assert _replay(app, captured, world["hook"]) == (303, 401)
    with db.session() as s:
        s.add(GroupMember(group_id=world["group"], value=world["alice"], type="User"))
    assert _replay(app, captured, world["hook"]) == (303, 401)


def test_the_overview_shows_sessions_elsewhere_and_ends_them(app, db, world):
    mine = _device_signin(app, db, world)
    page = mine.get("/admin/").get_data(as_text=True)
    assert 'id="signed-in-elsewhere"' not in page
    other = _device_signin(app, db, world)  # the same account, in another browser
    page = mine.get("/admin/").get_data(as_text=True)
    assert 'id="signed-in-elsewhere"' in page and "1 other browser session" in page
    resp = mine.post("/admin/sessions/end-others", data={"csrf": csrf_of(page)})
    assert resp.status_code == 303
    assert other.get(PAGE).status_code == 303  # the other browser is signed out
    page = mine.get("/admin/").get_data(as_text=True)
    assert mine.get(PAGE).status_code == 200 and 'id="signed-in-elsewhere"' not in page
    with db.session() as s:
        reasons = s.scalars(select(AdminSession.ended_reason)).all()
    assert sorted(reasons, key=str) == [None, "ended_by_owner"]  # mine lives on
