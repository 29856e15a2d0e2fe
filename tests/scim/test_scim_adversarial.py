"""Adversarial and client-quirk requests to /scim/v2, in process, on SQLite and PostgreSQL.

Each test is a problem an attacker or a real provisioning client (Okta, Entra ID)
could run into: a filter large enough to break the database's SQL parser, a PUT
or PATCH that leaves ``active`` out and silently gave a deactivated user back
their account, a deletion that left the user's re-authentication tokens live,
and a user named like a deleted user's tombstone, which made that deletion a 409.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import func, select
from werkzeug.test import Client

from idp_service import tokens
from idp_service.directory import users
from idp_service.directory.tables import Group
from idp_service.platform.db import Database
from idp_service.platform.errors import Invalid
from idp_service.platform.models import AuditEvent, User, utcnow
from idp_service.upstream.tables import ReauthToken
from scim.app import ScimApplication
from scim.storage import MAX_FILTER_TERMS
from tests.scim_helpers import ERROR, GROUP, patch, user_body

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


@pytest.fixture
def scim(migrated_url):
    db = Database(migrated_url)
    with db.session() as session:
        token = tokens.SCIM.create(session, "adversary")
    client = Client(ScimApplication(db, public_url="http://scim.test"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    def call(method: str, path: str, body=None, **kwargs):
        data = None if body is None else json.dumps(body)
        response = client.open(f"/v2{path}", method=method, data=data, headers=headers, **kwargs)
        text = response.get_data(as_text=True)
        return response.status_code, (json.loads(text) if text else None)

    yield db, call
    db.dispose()


def _events(db: Database, action: str) -> int:
    with db.session() as session:
        return session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )


def _count(db: Database, model) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def _active(db: Database, user_id: str) -> bool:
    with db.session() as session:
        return bool(session.get(User, user_id).active)


# -- filters with very many comparisons ----------------------------------------------------


def _many(attribute: str, n: int, joiner: str = "or") -> str:
    return f" {joiner} ".join(f'{attribute} eq "x{i}"' for i in range(n))


@pytest.mark.parametrize(
    ("path", "scim_filter"),
    [
        ("/Users", _many("userName", 1200)),
        ("/Users", _many("userName", 1200, "and")),
        ("/Users", _many("externalId", 3000)),
        ("/Groups", _many("displayName", 1200)),
    ],
)
def test_a_filter_with_too_many_comparisons_is_a_400_not_a_500(scim, path, scim_filter):
    """SQLite refused the narrowing SQL ("Expression tree is too large") with a 500."""
    db, call = scim
    status, body = call("POST", f"{path}/.search", {"schemas": [SEARCH], "filter": scim_filter})
    assert status == 400, body
    assert body["schemas"] == [ERROR]
    assert body["scimType"] == "invalidFilter"
    assert str(MAX_FILTER_TERMS) in body["detail"]
    status, body = call("GET", path, query_string={"filter": scim_filter})
    assert (status, body["scimType"]) == (400, "invalidFilter")


def test_a_filter_at_the_bound_is_answered(scim):
    db, call = scim
    status, created = call("POST", "/Users", user_body("x7@example.com"))
    assert status == 201
    scim_filter = _many("userName", MAX_FILTER_TERMS - 1) + ' or userName eq "X7@example.com"'
    status, body = call("POST", "/Users/.search", {"schemas": [SEARCH], "filter": scim_filter})
    assert status == 200, body
    assert [r["id"] for r in body["Resources"]] == [created["id"]]


# -- leaving `active` out does not reactivate ----------------------------------------------


def _deactivated_user(call, name: str) -> str:
    status, created = call("POST", "/Users", user_body(name, active=True, title="t"))
    assert status == 201
    status, body = call(
        "PATCH",
        f"/Users/{created['id']}",
        patch({"op": "Replace", "path": "active", "value": "False"}),
    )
    assert status == 200 and body["active"] is False
    return created["id"]


@pytest.mark.parametrize(
    "write",
    [
        ("PUT", user_body("dora@example.com", title="new title")),
        ("PATCH", patch({"op": "remove", "path": "active"})),
        ("PATCH", patch({"op": "replace", "path": "active", "value": None})),
        ("PATCH", patch({"op": "Replace", "value": {"active": None, "title": "x"}})),
    ],
    ids=["put-without-active", "patch-remove", "patch-null", "patch-no-path-null"],
)
def test_a_write_that_leaves_active_out_keeps_a_deactivated_user_deactivated(scim, write):
    """Only an explicit ``active: true`` gives a deactivated user their account back."""
    db, call = scim
    user_id = _deactivated_user(call, "dora@example.com")
    reactivations = _events(db, "scim.user.reactivate")
    method, body = write
    status, answer = call(method, f"/Users/{user_id}", body)
    assert status == 200, answer
    assert _active(db, user_id) is False
    assert "active" not in answer  # unassigned, as the client asked (RFC 7644 §3.5.2.2)
    assert _events(db, "scim.user.reactivate") == reactivations
    status, answer = call(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": False})
    )
    assert status == 200 and answer["active"] is False
    assert _active(db, user_id) is False
    # The explicit value still works.
    status, answer = call(
        "PATCH", f"/Users/{user_id}", patch({"op": "replace", "path": "active", "value": True})
    )
    assert status == 200 and answer["active"] is True
    assert _active(db, user_id) is True
    assert _events(db, "scim.user.reactivate") == reactivations + 1


def test_a_new_user_without_active_is_active_and_stays_so(scim):
    db, call = scim
    status, created = call("POST", "/Users", user_body("eve@example.com"))
    assert status == 201 and "active" not in created
    assert _active(db, created["id"]) is True
    status, answer = call("PUT", f"/Users/{created['id']}", user_body("eve@example.com", title="t"))
    assert status == 200 and _active(db, created["id"]) is True


# -- deletion revokes re-authentication tokens, as deactivation does -----------------------


def _reauth_token(db: Database, user_id: str) -> str:
    token_id = uuid.uuid4().hex
    with db.session() as session:
        session.add(
            ReauthToken(
                id=token_id,
                family=uuid.uuid4().hex,
                device_id="dev-" + token_id[:8],
                user_id=user_id,
                token_hash=uuid.uuid4().hex,
                expires_at=utcnow() + dt.timedelta(hours=8),
                issued_in="challenge-" + token_id[:8],
                sealed=b"sealed",
            )
        )
    return token_id


def _revocation(db: Database, token_id: str) -> tuple[bool, str | None]:
    with db.session() as session:
        row = session.get(ReauthToken, token_id)
        return row.revoked_at is not None, row.revoked_reason


def test_deleting_an_active_user_revokes_their_reauth_tokens(scim):
    db, call = scim
    status, created = call("POST", "/Users", user_body("fay@example.com", active=True))
    assert status == 201
    token_id = _reauth_token(db, created["id"])
    other = _reauth_token(db, "someone-else")
    status, _ = call("DELETE", f"/Users/{created['id']}")
    assert status == 204
    assert _revocation(db, token_id) == (True, "owner_deleted")
    assert _revocation(db, other) == (False, None)


# -- names a tombstone's key uses are reserved --------------------------------------------


@pytest.mark.parametrize("spelling", ["~deleted~{id}", "~DELETED~{id}", "~Deleted~{id}"])
def test_a_user_named_like_a_tombstone_cannot_block_a_deletion(scim, spelling):
    """A user named ``~deleted~<id>`` made the DELETE of user <id> a 409 ``uniqueness``."""
    db, call = scim
    status, victim = call("POST", "/Users", user_body("gil@example.com"))
    assert status == 201
    users = _count(db, User)
    status, body = call("POST", "/Users", user_body(spelling.format(id=victim["id"])))
    assert (status, body["scimType"]) == (400, "invalidValue"), body
    status, body = call(
        "PATCH",
        f"/Users/{victim['id']}",
        patch({"op": "replace", "path": "userName", "value": "~deleted~x"}),
    )
    assert (status, body["scimType"]) == (400, "invalidValue"), body
    assert _count(db, User) == users
    status, _ = call("DELETE", f"/Users/{victim['id']}")
    assert status == 204
    status, _ = call("GET", f"/Users/{victim['id']}")
    assert status == 404


@pytest.mark.parametrize("name", ["~collision~abc", "~deleted~abc"])
def test_a_group_cannot_take_a_reserved_key(scim, name):
    db, call = scim
    groups = _count(db, Group)
    status, body = call("POST", "/Groups", {"schemas": [GROUP], "displayName": name})
    assert (status, body["scimType"]) == (400, "invalidValue"), body
    assert _count(db, Group) == groups


def test_the_cli_cannot_create_a_user_named_like_a_tombstone(scim):
    db, _call = scim
    with db.session() as session, pytest.raises(Invalid) as refused:
        users.create(session, "~deleted~0123")
    assert refused.value.code == "invalid_user_name"


def _legacy_holder_of_the_tombstone_key(db: Database, user_id: str) -> None:
    """A row written before the key was reserved, holding ``~deleted~<user_id>``."""
    now = utcnow()
    with db.session() as session:
        session.add(
            User(
                id=uuid.uuid4().hex,
                user_name=f"~deleted~{user_id}",
                user_name_lower=f"~deleted~{user_id}",
                active=True,
                created_at=now,
                updated_at=now,
            )
        )


def test_a_deletion_that_cannot_tombstone_is_a_409_and_changes_nothing_even_in_bulk(scim):
    """In /Bulk on SQLite the memberships were dropped before the failing statement (500)."""
    db, call = scim
    status, victim = call("POST", "/Users", user_body("hal@example.com"))
    status, group = call(
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "hal's", "members": [{"value": victim["id"]}]},
    )
    assert status == 201
    _legacy_holder_of_the_tombstone_key(db, victim["id"])
    bulk = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "DELETE", "path": f"/Users/{victim['id']}"},
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "ivy",
                "data": user_body("ivy@example.com"),
            },
        ],
    }
    status, body = call("POST", "/Bulk", bulk)
    assert status == 200, body
    assert [op["status"] for op in body["Operations"]] == ["409", "201"], body
    status, after = call("GET", f"/Groups/{group['id']}")
    assert [m["value"] for m in after["members"]] == [victim["id"]]
    assert after["meta"]["version"] == group["meta"]["version"]
    status, body = call("DELETE", f"/Users/{victim['id']}")
    assert status == 409 and body["schemas"] == [ERROR], body
    status, _ = call("GET", f"/Users/{victim['id']}")
    assert status == 200
