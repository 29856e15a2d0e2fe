"""What scim2-tester does not cover, against the live service: auth and tokens,
filters, paging and sorting, attribute selection, 409s, ETags and bulk."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import select

from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent
from idp_service.token_tables import ScimToken
from tests.scim_helpers import (
    BULK_REQUEST,
    GROUP,
    USER,
    assert_scim_error,
    patch,
    scim_client,
    start_scim_service,
    user_body,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PEOPLE = [
    ("alice", "Alice Liddell", "alice@work.example", "Engineering"),
    ("Bob", "Bob Builder", "bob@work.example", "Sales"),
    ("carol", None, "carol@home.example", "Engineering"),
    ("dave_%", "Dave", "dave@work.example", None),
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def api(request, tmp_path_factory):
    """One live service per database for this module, with users already provisioned."""
    tmp = tmp_path_factory.mktemp(f"scim-api-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'devicetrust.db'}"
        janitor = None
    else:
        from pytest_postgresql.janitor import DatabaseJanitor

        from tests.conftest import PG_HOST, PG_PORT, PG_USER

        name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
        janitor = DatabaseJanitor(user=PG_USER, host=PG_HOST, port=PG_PORT, dbname=name)
        janitor.init()
        url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    svc, token = start_scim_service(tmp, url)
    scim = scim_client(svc, token)
    ids = {}
    for user_name, display, email, department in PEOPLE:
        body = user_body(
            user_name,
            emails=[{"value": email, "type": "work" if "work" in email else "home"}],
            **({"displayName": display} if display else {}),
        )
        if department:
            body["schemas"].append("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
            body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {
                "department": department
            }
        response = scim.post("/Users", json=body)
        assert response.status_code == 201, response.text
        ids[user_name] = response.json()["id"]
    yield svc, token, scim, ids
    svc.stop()
    if janitor is not None:
        janitor.drop()


def _names(response):
    assert response.status_code == 200, response.text
    return sorted(r["userName"] for r in response.json().get("Resources", []))


def _audit_rows(svc):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(select(AuditEvent)).all()
    finally:
        engine.dispose()


# -- Auth -------------------------------------------------------------------


def test_missing_or_bad_token_is_a_scim_401_with_a_challenge(api):
    svc, _token, _scim, _ids = api
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdDp0ZXN0"}):
        client = scim_client(svc, None)
        response = client.get("/Users", headers=headers)
        assert_scim_error(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer realm="devicetrust-scim"'
    # Unknown paths do not tell an anonymous caller what exists.
    assert_scim_error(scim_client(svc, None).get("/Nope/1"), 401)
    # The service provider configuration is public (RFC 7643 §5) and announces the scheme.
    config = scim_client(svc, None).get("/ServiceProviderConfig")
    assert config.status_code == 200
    assert config.json()["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    assert config.json()["changePassword"]["supported"] is False


def test_named_tokens_coexist_rotate_and_revoke_and_are_stored_hashed(api):
    svc, token, scim, _ids = api
    okta = svc.cli_json("scim-token", "create", "okta")["token"]
    script = svc.cli_json("scim-token", "create", "migration-script")["token"]
    assert scim_client(svc, okta).get("/Users").status_code == 200
    assert scim_client(svc, script).get("/Users").status_code == 200

    svc.cli("scim-token", "revoke", "migration-script")
    assert_scim_error(scim_client(svc, script).get("/Users"), 401)
    assert scim_client(svc, okta).get("/Users").status_code == 200

    rotated = svc.cli_json("scim-token", "rotate", "okta")["token"]
    assert_scim_error(scim_client(svc, okta).get("/Users"), 401)
    assert scim_client(svc, rotated).get("/Users").status_code == 200
    graceful = svc.cli_json("scim-token", "rotate", "okta", "--grace", "300")["token"]
    assert scim_client(svc, rotated).get("/Users").status_code == 200  # still in its grace
    assert scim_client(svc, graceful).get("/Users").status_code == 200

    listed = {t["name"]: t for t in svc.cli_json("scim-token", "list")}
    assert listed["okta"]["state"] == "active" and listed["okta"]["last_used_at"]
    assert listed["migration-script"]["state"] == "revoked"
    assert all("token" not in t and "hash" not in str(t) for t in listed.values())

    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    with engine.connect() as conn:
        stored = conn.execute(select(ScimToken.token_hash, ScimToken.previous_hash)).all()
    engine.dispose()
    hashes = {h for row in stored for h in row if h}
    assert hashlib.sha256(graceful.encode()).hexdigest() in hashes
    assert not any(t in hashes for t in (token, okta, script, rotated, graceful))


def test_every_use_is_audited_by_name_and_never_with_the_token(api):
    svc, token, scim, _ids = api
    marker = uuid.uuid4().hex
    scim.get("/Users", params={"filter": f'userName eq "{marker}"'})
    scim_client(svc, "dtscim_wrong").get("/Users")
    rows = _audit_rows(svc)
    uses = [r for r in rows if r.action == "scim.request" and r.actor == "scim-token:test"]
    assert uses and all(r.outcome == "ok" for r in uses if r.details["status"] < 400)
    assert any(r.action == "scim.auth" and r.outcome == "denied" for r in rows)
    dumped = " ".join(f"{r.actor} {r.details} {r.code}" for r in rows)
    assert token not in dumped and "dtscim_wrong" not in dumped
    assert token not in svc.log()


# -- Filters, paging, sorting, attributes -----------------------------------


@pytest.mark.parametrize(
    ("scim_filter", "expected"),
    [
        ('userName eq "ALICE"', ["alice"]),
        ('userName sw "dave_"', ["dave_%"]),
        ('userName co "%"', ["dave_%"]),
        ('displayName co "builder"', ["Bob"]),
        ("displayName pr", ["Bob", "alice", "dave_%"]),
        ('userName eq "alice" or userName eq "bob"', ["Bob", "alice"]),
        ('userName sw "a" and displayName pr', ["alice"]),
        ('emails[type eq "work"].value eq "BOB@work.example"', ["Bob"]),
        ('emails[type eq "work" and value co "alice"]', ["alice"]),
        ('emails.type eq "home"', ["carol"]),
        (
            f'{ENTERPRISE}:department eq "engineering"',
            ["alice", "carol"],
        ),
        ('not (userName eq "alice") and userName sw "c"', ["carol"]),
    ],
)
def test_filters(api, scim_filter, expected):
    _svc, _token, scim, _ids = api
    response = scim.get("/Users", params={"filter": scim_filter, "count": 100})
    assert _names(response) == expected
    assert response.json()["totalResults"] == len(expected)


def test_filter_by_post_search(api):
    _svc, _token, scim, _ids = api
    response = scim.post(
        "/Users/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "c"',
            "attributes": ["userName"],
        },
    )
    assert _names(response) == ["carol"]
    assert set(response.json()["Resources"][0]) == {"schemas", "id", "userName"}


def test_index_paging_is_stable_and_complete(api):
    _svc, _token, scim, _ids = api
    for i in range(21):
        assert scim.post("/Users", json=user_body(f"page{i:02}@example.com")).status_code in (
            201,
            409,
        )
    everyone = scim.get("/Users", params={"count": 1000}).json()
    total = everyone["totalResults"]
    pages, start = [], 1
    while start <= total:
        page = scim.get("/Users", params={"startIndex": start, "count": 7}).json()
        assert page["startIndex"] == start and page["totalResults"] == total
        assert page["itemsPerPage"] == len(page["Resources"]) <= 7
        pages += [r["id"] for r in page["Resources"]]
        start += 7
    assert pages == [r["id"] for r in everyone["Resources"]]  # same order, nothing twice
    assert len(set(pages)) == total
    again = scim.get("/Users", params={"startIndex": 8, "count": 7}).json()
    assert [r["id"] for r in again["Resources"]] == pages[7:14]
    # count is bounded by maxResults, startIndex past the end is an empty page.
    assert scim.get("/Users", params={"count": 100000}).json()["itemsPerPage"] <= 1000
    past = scim.get("/Users", params={"startIndex": total + 5}).json()
    assert past["totalResults"] == total and past.get("Resources", []) == []


def test_sorting_and_filtered_paging(api):
    _svc, _token, scim, _ids = api
    params = {"filter": 'userName sw "page"', "sortBy": "userName", "sortOrder": "descending"}
    first = scim.get("/Users", params={**params, "count": 5}).json()
    second = scim.get("/Users", params={**params, "count": 5, "startIndex": 6}).json()
    names = [r["userName"] for r in first["Resources"] + second["Resources"]]
    assert names == sorted(names, reverse=True) and len(set(names)) == 10
    assert first["totalResults"] == 21


def test_attributes_and_excluded_attributes(api):
    _svc, _token, scim, ids = api
    only = scim.get(f"/Users/{ids['alice']}", params={"attributes": "userName,emails.value"})
    assert only.json()["emails"] == [{"value": "alice@work.example"}]
    assert "displayName" not in only.json() and only.json()["id"] == ids["alice"]
    without = scim.get(f"/Users/{ids['alice']}", params={"excludedAttributes": "emails,name"})
    assert "emails" not in without.json() and without.json()["displayName"] == "Alice Liddell"


# -- Uniqueness ---------------------------------------------------------------


def test_uniqueness_is_a_409_on_create_replace_and_patch(api):
    _svc, _token, scim, ids = api
    assert_scim_error(scim.post("/Users", json=user_body("ALICE")), 409, "uniqueness")
    bob = scim.get(f"/Users/{ids['Bob']}").json()
    assert_scim_error(
        scim.put(f"/Users/{ids['Bob']}", json={**bob, "userName": "Alice"}), 409, "uniqueness"
    )
    assert_scim_error(
        scim.patch(
            f"/Users/{ids['Bob']}",
            json=patch({"op": "replace", "path": "userName", "value": "alice"}),
        ),
        409,
        "uniqueness",
    )
    assert scim.get(f"/Users/{ids['Bob']}").json()["userName"] == "Bob"
    one = scim.post("/Groups", json={"schemas": [GROUP], "displayName": "Uniq One"}).json()
    scim.post("/Groups", json={"schemas": [GROUP], "displayName": "Uniq Two"})
    assert_scim_error(
        scim.post("/Groups", json={"schemas": [GROUP], "displayName": "uniq one"}),
        409,
        "uniqueness",
    )
    assert_scim_error(
        scim.patch(
            f"/Groups/{one['id']}",
            json=patch({"op": "replace", "path": "displayName", "value": "UNIQ TWO"}),
        ),
        409,
        "uniqueness",
    )


# -- ETags ------------------------------------------------------------------


def test_etags_if_match_and_if_none_match(api):
    _svc, _token, scim, _ids = api
    created = scim.post("/Users", json=user_body(f"etag-{uuid.uuid4().hex[:8]}@example.com"))
    uid, etag = created.json()["id"], created.headers["etag"]
    assert etag.startswith('W/"')
    got = scim.get(f"/Users/{uid}")
    assert got.headers["etag"] == etag == got.json()["meta"]["version"]
    assert scim.get(f"/Users/{uid}", headers={"If-None-Match": etag}).status_code == 304

    changed = scim.patch(
        f"/Users/{uid}",
        json=patch({"op": "replace", "path": "displayName", "value": "One"}),
        headers={"If-Match": etag},
    )
    assert changed.status_code == 200
    new_etag = changed.headers["etag"]
    assert new_etag != etag
    # A writer holding the old version loses, and nothing is written.
    stale = scim.put(
        f"/Users/{uid}",
        json={**changed.json(), "displayName": "Two"},
        headers={"If-Match": etag},
    )
    assert_scim_error(stale, 412)
    assert scim.get(f"/Users/{uid}").json()["displayName"] == "One"
    assert_scim_error(scim.delete(f"/Users/{uid}", headers={"If-Match": etag}), 412)
    # A no-op PATCH keeps the version.
    same = scim.patch(
        f"/Users/{uid}", json=patch({"op": "replace", "path": "displayName", "value": "One"})
    )
    assert same.headers["etag"] == new_etag
    assert scim.delete(f"/Users/{uid}", headers={"If-Match": new_etag}).status_code == 204


# -- Bulk ---------------------------------------------------------------------


def test_bulk_with_bulk_ids_and_a_failing_operation(api):
    _svc, _token, scim, ids = api
    tag = uuid.uuid4().hex[:8]
    response = scim.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQUEST],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {
                        "schemas": [GROUP],
                        "displayName": f"bulk-{tag}",
                        "members": [{"value": "bulkId:u"}, {"value": ids["carol"]}],
                    },
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "u",
                    "data": {"schemas": [USER], "userName": f"bulk-{tag}@example.com"},
                },
                {"method": "POST", "path": "/Users", "bulkId": "dup", "data": user_body("alice")},
                {
                    "method": "PATCH",
                    "path": f"/Users/{ids['carol']}",
                    "data": patch({"op": "replace", "path": "title", "value": "Bulk"}),
                },
            ],
        },
    )
    assert response.status_code == 200, response.text
    statuses = [str(op["status"]) for op in response.json()["Operations"]]
    assert statuses == ["201", "201", "409", "200"]
    group_url = response.json()["Operations"][0]["location"]
    group = scim.get(group_url.split("/scim/v2", 1)[1]).json()
    user_id = response.json()["Operations"][1]["location"].rsplit("/", 1)[1]
    assert sorted(m["value"] for m in group["members"]) == sorted([user_id, ids["carol"]])
    assert scim.get(f"/Users/{ids['carol']}").json()["title"] == "Bulk"

    stopped = scim.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQUEST],
            "failOnErrors": 1,
            "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "a", "data": user_body("alice")},
                {"method": "POST", "path": "/Users", "bulkId": "b", "data": user_body(f"n-{tag}")},
            ],
        },
    )
    assert [str(op["status"]) for op in stopped.json()["Operations"]] == ["409"]
    assert (
        scim.get("/Users", params={"filter": f'userName eq "n-{tag}"'}).json()["totalResults"] == 0
    )
