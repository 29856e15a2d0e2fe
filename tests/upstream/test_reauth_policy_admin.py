"""The re-verification windows through the admin API and the console, in process.

Both call :mod:`idp_service.upstream.reauth` (as ``devicetrust reauth`` does): a set
window is what ``policy_for`` then applies, and every change is audited. Hostile
input gets a 4xx with a stable code, writes no window, and leaves the audit event.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp_service.api import openapi_document
from idp_service.platform.models import AuditEvent
from idp_service.upstream import reauth
from idp_service.upstream.tables import ReauthPolicy
from tests.admin.test_admin_console import _bootstrap_signin
from tests.admin.test_admin_console import app as app  # noqa: F401 - fixtures
from tests.admin.test_admin_console import db as db  # noqa: F401
from tests.admin.test_admin_console import world as world  # noqa: F401
from tests.admin_helpers import csrf_of
from tests.api_helpers import make_token, seed


@pytest.fixture
def api(service_ctx):
    db = service_ctx.extensions["devicetrust"].db
    data = seed(db)
    data["read"] = make_token(db, "reader", "read")
    data["write"] = make_token(db, "writer", "write")
    data["db"] = db
    data["client"] = service_ctx.test_client()
    return data


def call(api, method, path, token="write", **kw):
    headers = {"Authorization": f"Bearer {api[token]}"}
    return api["client"].open(f"/api/v1{path}", method=method, headers=headers, **kw)


def windows(db):
    with db.session() as s:
        return {
            r.scope: (r.lifetime, r.required, r.second_device)
            for r in s.scalars(select(ReauthPolicy)).all()
        }


def events(db, action):
    with db.session() as s:
        return s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )


def test_api_sets_reads_and_clears_windows(api):
    db = api["db"]
    r = call(api, "PUT", "/reauth/policies/global", json={"lifetime": "30d", "second_device": True})
    assert r.status_code == 200, r.json
    assert r.json == {
        "scope": "global",
        "lifetime": "30 d",
        "required": False,
        "second_device": True,
    }
    r = call(
        api, "PUT", "/reauth/policies/groups/Admins", json={"lifetime": "12h", "required": True}
    )
    assert r.status_code == 200 and r.json["scope"] == f"group:{api['group']}"
    listing = call(api, "GET", "/reauth/policies", token="read").json
    assert listing["global"]["second_device"] is True and listing["global"]["updated_by"] == (
        "api:writer"
    )
    assert [(g["group"], g["lifetime_seconds"], g["required"]) for g in listing["groups"]] == [
        ("Admins", 43200, True)
    ]
    with db.session() as s:  # what the sign-in applies: the group's (alice), the global (bob)
        assert reauth.policy_for(s, api["alice"]) == reauth.Policy(
            43200, True, f"group:{api['group']}", False
        )
        assert reauth.policy_for(s, api["bob"]).second_device is True
    assert events(db, "reauth.policy.set") == 2
    assert call(api, "DELETE", f"/reauth/policies/groups/{api['group']}").json["cleared"] is True
    assert call(api, "DELETE", "/reauth/policies/global").json["cleared"] is True
    assert windows(db) == {} and events(db, "reauth.policy.clear") == 2
    paths = openapi_document()["paths"]
    assert "get" in paths["/api/v1/reauth/policies"]
    assert {"put", "delete"} <= set(paths["/api/v1/reauth/policies/groups/{group}"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/reauth/policies/global", {"lifetime": "forever"}, 400, "bad_lifetime"),
        ("PUT", "/reauth/policies/global", {"lifetime": "5s"}, 400, "bad_lifetime"),
        ("PUT", "/reauth/policies/global", {"lifetime": "9" * 30 + "d"}, 400, "bad_lifetime"),
        ("PUT", "/reauth/policies/global", {"lifetime": "1d", "required": "yes"}, 400, None),
        ("PUT", "/reauth/policies/global", {"lifetime": "1d", "extra": 1}, 400, None),
        ("PUT", "/reauth/policies/global", {}, 400, None),
        ("PUT", "/reauth/policies/groups/nobody", {"lifetime": "1d"}, 404, "group_not_found"),
        ("PUT", "/reauth/policies/groups/a%00b", {"lifetime": "1d"}, 400, "bad_parameter"),
        ("DELETE", "/reauth/policies/groups/nobody", None, 404, "group_not_found"),
    ],
)
def test_api_refuses_hostile_input_and_writes_nothing(api, method, path, body, status, code):
    db = api["db"]
    r = call(api, method, path, json=body) if body is not None else call(api, method, path)
    assert r.status_code == status, r.json
    if code:
        assert r.json["error"]["code"] == code
    else:
        assert r.json["error"]["code"]
    assert windows(db) == {}
    with db.session() as s:
        last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome) == ("api.request", "rejected")


def test_api_read_token_cannot_set(api):
    r = call(api, "PUT", "/reauth/policies/global", token="read", json={"lifetime": "1d"})
    assert r.status_code == 403 and windows(api["db"]) == {}


def test_console_sets_and_clears_windows(app, db, world):  # noqa: F811
    client, _ = _bootstrap_signin(app, db)
    page = client.get("/admin/settings").get_data(as_text=True)
    assert 'id="reauth-second-device"' in page
    csrf = csrf_of(page)
    form = {"csrf": csrf, "scope": "global", "lifetime": "30d", "second_device": "on"}
    resp = client.post("/admin/settings/reauth", data=form)
    assert resp.status_code == 303
    form = {"csrf": csrf, "scope": "group", "group": "devicetrust-admins", "lifetime": "7d"}
    form["required"] = "on"
    assert client.post("/admin/settings/reauth", data=form).status_code == 303
    assert sorted(windows(db).values()) == [(7 * 86400, True, False), (30 * 86400, False, True)]
    page = client.get("/admin/settings").get_data(as_text=True)
    assert "second device" in page and "devicetrust-admins" in page
    with db.session() as s:
        event = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "reauth.policy.set")
        ).first()
        assert event.actor == "admin:bootstrap" and event.details["second_device"] is True
    resp = client.post(
        "/admin/settings/reauth", data={"csrf": csrf, "scope": "global", "action": "clear"}
    )
    assert resp.status_code == 303 and len(windows(db)) == 1


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"scope": "global", "lifetime": "30d", "csrf": "wrong"}, 403, "csrf_invalid"),
        ({"scope": "global", "lifetime": "30d", "csrf": None}, 403, "csrf_invalid"),
        ({"scope": "everyone", "lifetime": "30d"}, 400, "bad_scope"),
        ({"scope": "global", "lifetime": "soon"}, 400, "bad_lifetime"),
        ({"scope": "global", "lifetime": "30d", "action": "drop"}, 400, "bad_action"),
        ({"scope": "group", "group": "", "lifetime": "30d"}, 400, "group_required"),
        ({"scope": "group", "group": "x" * 300, "lifetime": "30d"}, 400, "group_required"),
        ({"scope": "group", "group": "ghosts", "lifetime": "30d"}, 404, "group_not_found"),
    ],
)
def test_console_refuses_hostile_input(app, db, world, form, status, code):  # noqa: F811
    client, _ = _bootstrap_signin(app, db)
    csrf = csrf_of(client.get("/admin/settings").get_data(as_text=True))
    data = {"csrf": csrf, **form}
    if data["csrf"] is None:
        del data["csrf"]
    resp = client.post("/admin/settings/reauth", data=data)
    assert resp.status_code == status and code.encode() in resp.data
    assert windows(db) == {}
    if code != "csrf_invalid":
        with db.session() as s:
            last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert (last.action, last.outcome, last.code) == ("admin.request", "rejected", code)
