"""The admin API in process, on SQLite and PostgreSQL: auth, scopes, resources, bad input."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp_service.api import openapi_document
from idp_service.api.core import decode_cursor, encode_cursor
from idp_service.platform.errors import ServiceError
from idp_service.platform.models import AuditEvent, Device
from idp_service.posture.tables import CheckResultRow, DeviceFacts
from tests.api_helpers import make_token, seed
from tests.saml_support import sp_metadata


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
    headers = {"Authorization": f"Bearer {api[token]}"} if token else {}
    return api["client"].open(f"/api/v1{path}", method=method, headers=headers, **kw)


def audit_count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent))


def last_event(db) -> AuditEvent:
    with db.session() as s:
        return s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()


def test_missing_or_bad_token_is_401_with_challenge_and_audited(api):
    r = call(api, "GET", "/devices", token=None)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json["error"]["code"] == "unauthorized"
    api["bogus"] = "dtapi_not-a-real-token"
    r = call(api, "GET", "/devices", token="bogus")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    event = last_event(api["db"])
    assert (event.action, event.outcome) == ("api.auth", "denied")
    assert "dtapi_" not in str(event.details)


def test_read_token_reads_but_cannot_write(api):
    assert call(api, "GET", "/devices", token="read").status_code == 200
    device = api["devices"]["pending"][0]
    r = call(api, "POST", f"/devices/{device}/approve", token="read", json={"reason": "ok"})
    assert r.status_code == 403
    assert r.json["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    with api["db"].session() as s:
        assert s.get(Device, device).state == "pending"
    event = last_event(api["db"])
    assert event.actor == "api:reader" and event.outcome == "denied"
    assert api["read"] not in str(event.details)


def test_revoked_token_stops_working(api):
    from idp_service import tokens

    assert call(api, "GET", "/devices", token="read").status_code == 200  # the control
    with api["db"].session() as s:
        tokens.API.revoke(s, "reader")
    r = call(api, "GET", "/devices", token="read")
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="devicetrust", error="invalid_token"'
    assert "items" not in r.json  # no data with the refusal
    # The other tokens are untouched.
    assert call(api, "GET", "/devices", token="write").status_code == 200


def test_every_use_is_audited_by_token_name(api):
    before = audit_count(api["db"])
    call(api, "GET", "/overview")
    event = last_event(api["db"])
    assert audit_count(api["db"]) == before + 1
    assert (event.action, event.actor, event.details["token"]) == (
        "api.request",
        "api:writer",
        "writer",
    )
    assert event.details["path"] == "/api/v1/overview"


def test_device_list_filters_search_and_pages(api):
    r = call(api, "GET", "/devices", query_string={"state": "trusted"})
    assert {d["state"] for d in r.json["items"]} == {"trusted"}
    assert len(r.json["items"]) == 2
    r = call(api, "GET", "/devices", query_string={"q": "_x%", "platform": "linux"})
    assert r.json["items"] and {d["platform"] for d in r.json["items"]} == {"linux"}
    assert call(api, "GET", "/devices", query_string={"q": "nomatch"}).json["items"] == []
    r = call(api, "GET", "/devices", query_string={"user": "BOB@example.com"})
    assert {d["user"] for d in r.json["items"]} == {"bob@example.com"}
    seen, cursor = [], None
    while True:
        q = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = call(api, "GET", "/devices", query_string=q).json
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8
    first_seen = [d["first_seen"] for d in call(api, "GET", "/devices").json["items"]]
    assert first_seen == sorted(first_seen, reverse=True)


def test_device_detail_has_facts_checks_history_and_audit(api):
    device = api["devices"]["trusted"][0]
    body = call(api, "GET", f"/devices/{device}").json
    assert body["device"]["id"] == device
    assert body["facts"]["facts"] == {"os": {"name": "linux"}}
    assert body["checks"][0]["check_id"] == "disk_encryption"
    assert body["check_history"][0]["status"] == "FAIL"
    assert call(api, "GET", "/devices/nope").status_code == 404


def test_actions_need_reasons_change_state_and_are_audited(api):
    device = api["devices"]["pending"][0]
    before = audit_count(api["db"])
    r = call(api, "POST", f"/devices/{device}/approve", json={"reason": "   "})
    assert r.status_code == 400 and r.json["error"]["code"] == "reason_required"
    r = call(api, "POST", f"/devices/{device}/approve", json={})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_body"
    assert audit_count(api["db"]) == before + 2  # only the request events
    r = call(api, "POST", f"/devices/{device}/approve", json={"reason": "known laptop"})
    assert r.status_code == 200 and r.json["state"] == "trusted"
    assert call(api, "GET", "/approvals").json["items"][0]["id"] != device
    r = call(api, "POST", f"/devices/{device}/deny", json={"reason": "x"})
    assert r.status_code == 409 and r.json["error"]["code"] == "bad_transition"
    r = call(api, "POST", f"/devices/{device}/revoke", json={"reason": "lost"})
    assert r.json["state"] == "revoked"
    r = call(api, "POST", f"/devices/{device}/retrust", json={"reason": "found"})
    assert r.json["state"] == "trusted"
    trail = call(api, "GET", "/audit", query_string={"device_id": device}).json["items"]
    assert [e["action"] for e in trail][:3] == ["device.retrust", "device.revoke", "device.approve"]
    assert trail[0]["actor"] == "api:writer"


def test_change_owner_and_delete(api):
    device = api["devices"]["trusted"][0]
    r = call(api, "POST", f"/devices/{device}/owner", json={"user_id": "nobody", "reason": "r"})
    assert r.status_code == 404 and r.json["error"]["code"] == "user_not_found"
    owner = call(api, "GET", f"/devices/{device}").json["device"]["user_id"]
    other = api["bob"] if owner == api["alice"] else api["alice"]
    r = call(api, "POST", f"/devices/{device}/owner", json={"user_id": other, "reason": "handover"})
    assert r.status_code == 200 and r.json["user_id"] == other
    r = call(api, "POST", f"/devices/{device}/owner", json={"user_id": other, "reason": "again"})
    assert r.status_code == 409
    r = call(api, "DELETE", f"/devices/{device}", json={"reason": "retired"})
    assert r.status_code == 200 and r.json["deleted"]["id"] == device
    with api["db"].session() as s:
        assert s.get(Device, device) is None
        assert s.get(DeviceFacts, device) is None
        assert not s.scalars(select(CheckResultRow).where(CheckResultRow.device_id == device)).all()
    assert call(api, "DELETE", f"/devices/{device}", json={"reason": "r"}).status_code == 404
    assert last_event(api["db"]).code == "device_not_found"


def test_users_groups_and_enrollment_codes(api):
    users = call(api, "GET", "/users").json["items"]
    assert [u["user_name"] for u in users] == ["alice@example.com", "bob@example.com"]
    page = call(api, "GET", "/users", query_string={"limit": 1}).json
    nxt = call(api, "GET", "/users", query_string={"limit": 1, "cursor": page["next_cursor"]}).json
    assert nxt["items"][0]["user_name"] == "bob@example.com" and nxt["next_cursor"] is None
    alice = call(api, "GET", f"/users/{api['alice']}").json
    assert [g["display_name"] for g in alice["groups"]] == ["Admins"]
    assert alice["devices"]
    group = call(api, "GET", f"/groups/{api['group']}").json
    assert group["members"][0]["value"] == api["alice"]
    assert call(api, "GET", "/groups", query_string={"q": "adm"}).json["items"][0]["id"]
    r = call(api, "POST", f"/users/{api['alice']}/enrollment-codes", json={"ttl_seconds": 600})
    assert r.status_code == 201 and len(r.json["code"]) == 19
    assert r.json["code"] not in str(last_event(api["db"]).details)
    r = call(api, "POST", f"/users/{api['alice']}/enrollment-codes", json={"ttl_seconds": 1})
    assert r.status_code == 400


def test_sps_round_trip(api):
    xml = sp_metadata("https://sp.example.com/meta", ["https://sp.example.com/acs"]).decode()
    r = call(api, "POST", "/sps", json={"metadata_xml": xml, "name": "Example"})
    assert r.status_code == 201, r.json
    sp_id = r.json["id"]
    assert call(api, "POST", "/sps", json={"metadata_xml": xml}).status_code == 409
    assert call(api, "POST", "/sps", json={"metadata_xml": "<nope"}).status_code == 400
    assert [s["id"] for s in call(api, "GET", "/sps").json["items"]] == [sp_id]
    r = call(api, "PATCH", f"/sps/{sp_id}", json={"session_minutes": 30})
    assert r.status_code == 200 and r.json["session_minutes"] == 30
    assert "metadata_xml" in call(api, "GET", f"/sps/{sp_id}?metadata=true").json
    assert call(api, "DELETE", f"/sps/{sp_id}").status_code == 200
    assert call(api, "GET", f"/sps/{sp_id}").status_code == 404


def test_checks_exemptions_overview(api):
    assert isinstance(call(api, "GET", "/checks").json["items"], list)
    assert call(api, "GET", "/checks/no-such-check").status_code == 404
    body = {
        "check_id": "disk_encryption",
        "scope": "user",
        "subject": "alice@example.com",
        "days": 7,
        "reason": "new laptop on order",
    }
    r = call(api, "POST", "/exemptions", json=body)
    assert r.status_code == 201
    ex_id = r.json["id"]
    assert [e["id"] for e in call(api, "GET", "/exemptions").json["items"]] == [ex_id]
    assert call(api, "DELETE", f"/exemptions/{ex_id}", json={"reason": "done"}).status_code == 200
    assert call(api, "GET", "/exemptions").json["items"] == []
    assert call(api, "DELETE", f"/exemptions/{ex_id}", json={"reason": "x"}).status_code == 404
    overview = call(api, "GET", "/overview").json
    assert overview["devices"] == {
        "pending": 2,
        "trusted": 2,
        "denied": 2,
        "revoked": 2,
        "suspended": 0,
    }
    assert overview["failing_checks"] == [{"check_id": "disk_encryption", "devices": 1}]


def test_audit_pages_by_id(api):
    for _ in range(3):
        call(api, "GET", "/overview")
    page = call(api, "GET", "/audit", query_string={"limit": 2, "action": "api.request"}).json
    ids = [e["id"] for e in page["items"]]
    assert ids == sorted(ids, reverse=True)
    nxt = call(api, "GET", "/audit", query_string={"limit": 2, "cursor": page["next_cursor"]}).json
    assert max(e["id"] for e in nxt["items"]) < min(ids)


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "code"),
    [
        ("GET", "/devices?limit=0", {}, 400, "bad_parameter"),
        ("GET", "/devices?limit=abc", {}, 400, "bad_parameter"),
        ("GET", "/devices?state=lost", {}, 400, "bad_parameter"),
        ("GET", "/devices?cursor=%%%", {}, 400, "bad_parameter"),  # not base64url
        ("GET", "/devices?cursor=WyJ4IiwieSJd", {}, 400, "bad_cursor"),  # ["x","y"]
        ("GET", "/devices?q=%00", {}, 400, "bad_parameter"),
        ("GET", "/audit?cursor=WzFd&limit=501", {}, 400, "bad_parameter"),
        (
            "POST",
            "/exemptions",
            {"data": "{", "content_type": "application/json"},
            400,
            "malformed",
        ),
        ("POST", "/exemptions", {"data": "x", "content_type": "text/plain"}, 415, None),
        ("POST", "/exemptions", {"json": [1]}, 400, "invalid_body"),
        (
            "POST",
            "/exemptions",
            {"data": "[" * 100000, "content_type": "application/json"},
            400,
            "malformed",
        ),
        ("POST", "/sps", {"json": {"metadata_xml": "a\x00b"}}, 400, "invalid_body"),
        (
            "POST",
            "/sps",
            {"data": '{"metadata_xml": "\\ud800"}', "content_type": "application/json"},
            400,
            "invalid_body",
        ),
        ("POST", "/sps", {"json": {"metadata_xml": "<x/>", "evil": 1}}, 400, "invalid_body"),
        ("GET", "/nope", {}, 404, "not_found"),
        ("PUT", "/devices", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_input_is_a_stable_4xx_and_writes_nothing_else(api, method, path, kw, status, code):
    with api["db"].session() as s:
        devices_before = s.scalar(select(func.count()).select_from(Device))
    r = call(api, method, path, **kw)
    assert r.status_code == status, r.json
    assert r.is_json
    if code:
        assert r.json["error"]["code"] == code
    with api["db"].session() as s:
        assert s.scalar(select(func.count()).select_from(Device)) == devices_before


def test_openapi_document_lists_every_route(service_ctx):
    doc = service_ctx.test_client().get("/api/v1/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    documented = {
        (m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"
    }
    routed = set()
    for rule in service_ctx.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "admin_api.openapi_json":
            path = rule.rule
            for arg in rule.arguments:
                path = path.replace(f"<int:{arg}>", "{" + arg + "}").replace(
                    f"<{arg}>", "{" + arg + "}"
                )
            routed |= {(m, path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    assert doc == openapi_document()


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor(["a", 1]), (str, int)) == ["a", 1]
    with pytest.raises(ServiceError):
        decode_cursor(encode_cursor(["a", True]), (str, int))
