"""Numbers too large for the database are a 4xx (or an empty page), never a 500: route
ids, query parameters and SCIM paging, in process on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp_service import tokens
from idp_service.admin import bootstrap
from idp_service.posture.tables import ExemptionRow
from tests.admin_helpers import csrf_of

HUGE = [str(10**23), str(2**63), str(2**64 + 1), "9" * 40]


@pytest.fixture
def app(service_ctx):
    return service_ctx


def _db(app):
    return app.extensions["devicetrust"].db


def _admin(app):
    client = app.test_client()
    with _db(app).session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    assert client.post("/admin/bootstrap", data={"token": token, "csrf": csrf}).status_code == 303
    return client, csrf_of(client.get("/admin/checks").get_data(as_text=True))


@pytest.mark.parametrize("number", HUGE)
def test_console_routes_refuse_ids_out_of_range(app, number):
    client, csrf = _admin(app)
    form = {"csrf": csrf, "reason": "probe", "active": "true"}
    for path in (
        f"/admin/exemptions/{number}/remove",
        f"/admin/webhooks/{number}/test",
        f"/admin/webhooks/{number}/active",
        f"/admin/webhooks/{number}/rotate",
        f"/admin/webhooks/{number}/delete",
        f"/admin/webhook-deliveries/{number}/redeliver",
    ):
        resp = client.post(path, data=form)
        assert 400 <= resp.status_code < 500, (path, resp.status_code)
    for path in (f"/admin/webhooks?webhook={number}", f"/admin/webhooks?before={number}"):
        assert 400 <= client.get(path).status_code < 500, path


@pytest.mark.parametrize("number", HUGE)
def test_scim_paging_with_huge_numbers_is_an_empty_page(app, number):
    with _db(app).session() as s:
        token = tokens.SCIM.create(s, "huge", actor="test")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/scim+json"}
    for resource in ("Users", "Groups"):
        for query in (f"startIndex={number}", f"count={number}", f"startIndex={number}&count=5"):
            resp = client.get(f"/scim/v2/{resource}?{query}", headers=headers)
            assert resp.status_code == 200, (query, resp.status_code, resp.get_data(as_text=True))
            body = resp.get_json()
            if "startIndex" in query:
                assert body.get("Resources", []) == []
        filtered = client.get(
            f'/scim/v2/Users?filter=userName sw "a"&startIndex={number}', headers=headers
        )
        assert filtered.status_code == 200, filtered.get_data(as_text=True)


@pytest.mark.parametrize("number", HUGE)
def test_admin_api_refuses_integers_out_of_range(app, number):
    with _db(app).session() as s:
        token = tokens.API.create(s, "huge", "read", actor="test")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    spec = client.get("/api/v1/openapi.json", headers=headers).get_json()
    probed = 0
    for path, ops in spec["paths"].items():
        get = ops.get("get")
        if not get or "{" in path:
            continue
        for param in get.get("parameters", []):
            if param.get("in") == "query" and param.get("schema", {}).get("type") == "integer":
                resp = client.get(f"/api/v1{path}?{param['name']}={number}", headers=headers)
                assert 400 <= resp.status_code < 500, (path, param["name"], resp.status_code)
                probed += 1
    assert probed > 0


@pytest.mark.parametrize("digits", ["\u00b2", "\u2460", "1\u00b2"])  # digits int() refuses
def test_console_numbers_are_ascii_digits(app, digits):
    client, csrf = _admin(app)
    for path in (f"/admin/audit?before={digits}", f"/admin/webhooks?before={digits}"):
        assert client.get(path).status_code == 400, path
    form = {"csrf": csrf, "reason": "r", "check_id": "x", "scope": "user", "subject": "a"}
    resp = client.post("/admin/exemptions", data={**form, "days": digits})
    assert resp.status_code == 400 and b"bad_exemption" in resp.data
    with _db(app).session() as s:  # refused, not half written
        assert s.scalar(select(func.count()).select_from(ExemptionRow)) == 0
