"""Replays of Okta's and Microsoft Entra ID's documented SCIM request sequences.

The bodies are the shapes the two IdPs send (see docs/scim.md), against the live
service process; each step checks the status code and the body, and the
deactivations are checked where the login path reads them, in ``users``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp_service.directory.groups import groups_of
from idp_service.platform.db import make_engine
from idp_service.platform.models import User
from tests.scim_helpers import (
    GROUP,
    LIST,
    USER,
    assert_scim_error,
    patch,
    scim_client,
    start_scim_service,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MS_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"


@pytest.fixture
def live(tmp_path, database_url):
    svc, token = start_scim_service(tmp_path, database_url)
    yield svc, scim_client(svc, token)
    svc.stop()


def _user_row(svc, user_id):
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(select(User).where(User.id == user_id)).one()
    finally:
        engine.dispose()


def _groups_of(svc, user_id):
    from sqlalchemy.orm import Session

    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with Session(engine) as session:
            return groups_of(session, user_id)
    finally:
        engine.dispose()


def _empty_list(response):
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schemas"] == [LIST]
    assert body["totalResults"] == 0
    assert body.get("Resources", []) == []


def test_okta_sequence(live):
    svc, scim = live
    name = "dade.murphy@example.com"
    # Import / match: Okta looks the user up before creating it.
    lookup = {"filter": f'userName eq "{name}"', "startIndex": 1, "count": 100}
    _empty_list(scim.get("/Users", params=lookup))
    okta_user = {
        "schemas": [USER],
        "userName": name,
        "name": {"givenName": "Dade", "familyName": "Murphy"},
        "emails": [{"primary": True, "value": name, "type": "work"}],
        "displayName": "Dade Murphy",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    created = scim.post("/Users", json=okta_user)
    assert created.status_code == 201, created.text
    user = created.json()
    uid = user["id"]
    assert user["userName"] == name and user["active"] is True
    assert user["externalId"] == "00ujl29u0le5T6Aj10h7"
    assert "password" not in user
    assert created.headers["location"] == f"{svc.url}/scim/v2/Users/{uid}"
    assert created.headers["etag"] == user["meta"]["version"]
    assert "1mz050nq" not in str(_user_row(svc, uid).scim_resource)  # never stored

    # A duplicate (whatever the case) is a 409 uniqueness.
    assert_scim_error(
        scim.post("/Users", json={**okta_user, "userName": name.upper()}), 409, "uniqueness"
    )

    found = scim.get("/Users", params=lookup).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == uid
    assert found["startIndex"] == 1 and found["itemsPerPage"] == 1

    # Profile update by PUT (apps built with Okta's wizard), password included.
    put = scim.put(
        f"/Users/{uid}",
        json={**okta_user, "id": uid, "name": {"givenName": "Zero", "familyName": "Cool"}},
    )
    assert put.status_code == 200, put.text
    assert put.json()["name"] == {"givenName": "Zero", "familyName": "Cool"}

    # Deactivation: a PATCH replace with no path.
    off = scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": False}}))
    assert off.status_code == 200, off.text
    assert off.json()["active"] is False
    row = _user_row(svc, uid)
    assert row.active is False and row.deactivated_at is not None
    # Okta retries: a repeated deactivation changes nothing, not even the version.
    again = scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": False}}))
    assert again.status_code == 200
    assert again.json()["meta"]["version"] == off.json()["meta"]["version"]
    assert _user_row(svc, uid).deactivated_at == row.deactivated_at

    # Okta's wizard apps deactivate with PUT instead.
    on = scim.patch(f"/Users/{uid}", json=patch({"op": "replace", "value": {"active": True}}))
    assert on.json()["active"] is True and _user_row(svc, uid).active is True
    put_off = scim.put(f"/Users/{uid}", json={**okta_user, "id": uid, "active": False})
    assert put_off.status_code == 200 and put_off.json()["active"] is False
    assert _user_row(svc, uid).active is False

    # Group push.
    _empty_list(
        scim.get(
            "/Groups",
            params={"filter": 'displayName eq "Engineering"', "startIndex": 1, "count": 100},
        )
    )
    group = scim.post("/Groups", json={"schemas": [GROUP], "displayName": "Engineering"})
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    add = scim.patch(
        f"/Groups/{gid}",
        json=patch({"op": "add", "path": "members", "value": [{"value": uid, "display": name}]}),
    )
    assert add.status_code == 200, add.text
    assert [m["value"] for m in add.json()["members"]] == [uid]
    assert add.json()["members"][0]["$ref"] == f"{svc.url}/scim/v2/Users/{uid}"
    assert _groups_of(svc, uid) == ["Engineering"]

    listed = scim.get("/Groups", params={"excludedAttributes": "members"}).json()
    assert listed["totalResults"] == 1 and "members" not in listed["Resources"][0]

    # Rename: a no-path replace that carries the id too.
    renamed = scim.patch(
        f"/Groups/{gid}",
        json=patch({"op": "replace", "value": {"id": gid, "displayName": "Engineering Team"}}),
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["displayName"] == "Engineering Team"
    assert _groups_of(svc, uid) == ["Engineering Team"]

    removed = scim.patch(
        f"/Groups/{gid}", json=patch({"op": "remove", "path": f'members[value eq "{uid}"]'})
    )
    assert removed.status_code == 200, removed.text
    assert removed.json().get("members", []) == []
    assert _groups_of(svc, uid) == []

    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert_scim_error(scim.get(f"/Groups/{gid}"), 404)


def test_entra_sequence(live):
    svc, scim = live
    # "Test connection": a filter on a userName that does not exist.
    _empty_list(scim.get("/Users", params={"filter": 'userName eq "non-existent user"'}))
    upn = "Test_User_ab6490ee@testuser.com"
    entra_user = {
        "schemas": [USER, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": upn,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "g"},
        "roles": [],
        ENTERPRISE: {"department": "Sales"},
    }
    created = scim.post("/Users", json=entra_user)
    assert created.status_code == 201, created.text
    uid = created.json()["id"]
    assert created.json()[ENTERPRISE] == {"department": "Sales"}

    for scim_filter in (
        f'userName eq "{upn.lower()}"',
        'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"',
        f'userName eq "{upn}" and externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"',
        'emails[type eq "work"].value eq "test_user_fd0ea19b@testuser.com"',
    ):
        found = scim.get("/Users", params={"filter": scim_filter}).json()
        assert [r["id"] for r in found["Resources"]] == [uid], scim_filter
    _empty_list(scim.get("/Users", params={"filter": 'externalId eq "0A21F0F2-8D2A"'}))

    # Capitalised ops, a single-valued "Add", dotted keys, a filtered path.
    changed = scim.patch(
        f"/Users/{uid}",
        json=patch(
            {"op": "Add", "path": "title", "value": "Manager"},
            {"op": "Replace", "path": "displayName", "value": "Test User"},
            {"op": "Replace", "value": {"name.givenName": "Given", "name.familyName": "Family"}},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@testuser.com"},
            {"op": "Add", "path": f"{ENTERPRISE}:employeeNumber", "value": "42"},
        ),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["title"] == "Manager" and body["displayName"] == "Test User"
    assert body["name"]["givenName"] == "Given" and body["name"]["familyName"] == "Family"
    assert body["emails"][0]["value"] == "new@testuser.com"
    assert body[ENTERPRISE]["employeeNumber"] == "42"

    # Disable, with "False" as a string.
    disabled = scim.patch(
        f"/Users/{uid}", json=patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["active"] is False
    assert _user_row(svc, uid).active is False
    # Disabled users are still returned.
    found = scim.get("/Users", params={"filter": f'userName eq "{upn}"'}).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["active"] is False

    # Groups, with Entra's own group schema URN.
    group = scim.post(
        "/Groups",
        json={
            "schemas": [GROUP, MS_GROUP],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Group1",
            "members": [],
        },
    )
    assert group.status_code == 201, group.text
    gid = group.json()["id"]
    assert group.json()["schemas"] == [GROUP]  # the unknown URN is not echoed
    found = scim.get(
        "/Groups",
        params={"filter": 'displayName eq "Group1"', "excludedAttributes": "members"},
    ).json()
    assert [g["id"] for g in found["Resources"]] == [gid]
    assert_scim_error(
        scim.post("/Groups", json={"schemas": [GROUP, MS_GROUP], "displayName": "GROUP1"}),
        409,
        "uniqueness",
    )

    added = scim.patch(
        f"/Groups/{gid}",
        json=patch({"op": "Add", "path": "members", "value": [{"value": uid}]}),
    )
    assert added.status_code == 200, added.text
    assert [m["value"] for m in added.json()["members"]] == [uid]
    assert _groups_of(svc, uid) == ["Group1"]
    # Entra removes members with a value instead of a filtered path.
    removed = scim.patch(
        f"/Groups/{gid}",
        json=patch({"op": "Remove", "path": "members", "value": [{"value": uid}]}),
    )
    assert removed.status_code == 200, removed.text
    assert removed.json().get("members", []) == []
    renamed = scim.patch(
        f"/Groups/{gid}",
        json=patch({"op": "Replace", "path": "displayName", "value": "Group1 Renamed"}),
    )
    assert renamed.json()["displayName"] == "Group1 Renamed"

    # Entra deletes users it no longer provisions: gone for SCIM, inactive for logins.
    assert scim.delete(f"/Users/{uid}").status_code == 204
    assert_scim_error(scim.get(f"/Users/{uid}"), 404)
    row = _user_row(svc, uid)
    assert row.active is False and row.deleted_at is not None
    recreated = scim.post("/Users", json=entra_user)  # the userName is free again
    assert recreated.status_code == 201 and recreated.json()["id"] != uid
