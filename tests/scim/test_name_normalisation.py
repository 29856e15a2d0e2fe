"""One normalisation for user names, e-mails and group names (SQLite and PostgreSQL).

A look-alike admin group (``devicetrust-adminſ``, long s) or a look-alike user
(``straße`` beside ``strasse``, a decomposed ``Renée`` beside the precomposed
one) is refused through SCIM with 409 ``uniqueness`` and through the CLI, a
mixed-script look-alike is refused outright, and the admin-group check matches
the group's stored key exactly, so a look-alike group's members never get the
console. Revision 0016 re-keys existing rows and sorts out collisions.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import unicodedata

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from werkzeug.test import Client

from idp_service import tokens
from idp_service.cli import cli
from idp_service.directory import users
from idp_service.directory.tables import Group
from idp_service.platform.errors import ServiceError
from idp_service.platform.identity import ConfusableName, check_identifier, name_key
from idp_service.platform.migrate import alembic_config, upgrade
from idp_service.platform.models import LoginTransaction, User, utcnow
from idp_service.web.errors import status_of
from scim.app import ScimApplication
from tests.admin_helpers import make_device
from tests.scim_helpers import GROUP, PATCH_OP, SCIM_JSON, USER

RENEE_NFC = unicodedata.normalize("NFC", "Renée@example.com")
RENEE_NFD = unicodedata.normalize("NFD", "Renée@example.com")
LONG_S_GROUP = "devicetrust-admin\u017f"  # devicetrust-adminſ
CYRILLIC_GROUP = "devicetrust-\u0430dmins"  # a Cyrillic а among Latin letters


def test_one_key_for_each_spelling():
    assert RENEE_NFC != RENEE_NFD
    assert name_key(RENEE_NFC) == name_key(RENEE_NFD)
    assert name_key("straße@example.com") == name_key("STRASSE@example.com")
    assert name_key(LONG_S_GROUP) == name_key("devicetrust-admins")
    assert name_key(CYRILLIC_GROUP) != name_key("devicetrust-admins")
    with pytest.raises(ConfusableName):
        check_identifier(CYRILLIC_GROUP)
    check_identifier("Renée@example.com")  # one script (plus common characters) is fine


@pytest.fixture
def app(service_ctx):
    return service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def scim(db):
    """SCIM on the service's database, as the identity provider calls it: (method, path, body)."""
    with db.session() as s:
        token = tokens.SCIM.create(s, "idp")
    client = Client(ScimApplication(db, public_url="http://scim.test"))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON}

    def call(method: str, path: str, body: dict) -> tuple[int, dict]:
        resp = client.open(path, method=method, data=json.dumps(body), headers=headers)
        return resp.status_code, json.loads(resp.get_data(as_text=True) or "{}")

    return call


def _user(scim, user_name: str) -> str:
    status, body = scim("POST", "/v2/Users", {"schemas": [USER], "userName": user_name})
    assert status == 201, body
    return body["id"]


def _group(scim, name: str, *members: str) -> tuple[int, dict]:
    return scim(
        "POST",
        "/v2/Groups",
        {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]},
    )


def _console_login(app, db, user_id: str) -> int:
    """A verified console sign-in for the user's trusted device: the /continue status."""
    with db.session() as s:
        device = make_device(s, s.get(User, user_id), state="trusted")
        txn = LoginTransaction(
            id=f"t{time.time_ns()}",
            status="verified",
            user_id=user_id,
            device_id=device.id,
            context={"kind": "admin"},
            expires_at=utcnow() + dt.timedelta(minutes=5),
            verified_at=utcnow(),
        )
        s.add(txn)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["login_txns"] = [txn.id]
    return client.get(f"/login/{txn.id}/continue").status_code


def test_a_look_alike_admin_group_is_refused_and_gives_no_console(app, db, scim):
    alice = _user(scim, "alice@example.com")
    mallory = _user(scim, "mallory@example.com")
    status, _ = _group(scim, "devicetrust-admins", alice)
    assert status == 201
    # Creating the look-alike, or renaming another group to it, collides with the admin group.
    status, body = _group(scim, LONG_S_GROUP, mallory)
    assert status == 409 and body["scimType"] == "uniqueness", body
    status, body = _group(scim, "mallory-team", mallory)
    assert status == 201
    team = body["id"]
    rename = {"op": "replace", "path": "displayName", "value": LONG_S_GROUP}
    status, body = scim(
        "PATCH", f"/v2/Groups/{team}", {"schemas": [PATCH_OP], "Operations": [rename]}
    )
    assert status == 409 and body["scimType"] == "uniqueness", body
    # A mixed-script look-alike keys differently, so it is refused as a look-alike instead.
    rename["value"] = CYRILLIC_GROUP
    status, body = scim(
        "PATCH", f"/v2/Groups/{team}", {"schemas": [PATCH_OP], "Operations": [rename]}
    )
    assert status == 400 and body["scimType"] == "invalidValue", body
    with db.session() as s:
        names = sorted(s.scalars(select(Group.display_name)))
    assert names == ["devicetrust-admins", "mallory-team"]
    assert _console_login(app, db, mallory) == 403  # not_admin
    assert _console_login(app, db, alice) == 303


def test_a_group_stored_under_a_look_alike_name_is_not_the_admin_group(app, db, scim):
    """Rows written before this rule (or by hand) are matched by key, not by folding names."""
    mallory = _user(scim, "mallory@example.com")
    with db.session() as s:
        from idp_service.directory.tables import GroupMember

        for i, name in enumerate((CYRILLIC_GROUP, "DEVICETRUST-ADMINS\u200b")):
            group = Group(id=f"g{i}", display_name=name, display_name_key=name.lower())
            s.add(group)
            s.flush()
            s.add(GroupMember(group_id=group.id, value=mallory, type="User"))
    assert _console_login(app, db, mallory) == 403


def test_look_alike_users_are_one_user(db, scim):
    _user(scim, "strasse@example.com")
    status, body = scim("POST", "/v2/Users", {"schemas": [USER], "userName": "straße@example.com"})
    assert status == 409 and body["scimType"] == "uniqueness", body
    renee = _user(scim, RENEE_NFC)
    status, body = scim("POST", "/v2/Users", {"schemas": [USER], "userName": RENEE_NFD})
    assert status == 409 and body["scimType"] == "uniqueness", body
    status, body = scim(
        "POST", "/v2/Users", {"schemas": [USER], "userName": "p\u0430ul@example.com"}
    )
    assert status == 400 and body["scimType"] == "invalidValue", body
    with db.session() as s:
        assert users.find(s, RENEE_NFD).id == renee
        assert users.find(s, "RENÉE@EXAMPLE.COM").id == renee
        assert users.find(s, "STRASSE@example.com").user_name == "strasse@example.com"
        with pytest.raises(ServiceError) as refused:
            users.create(s, RENEE_NFD, actor="test")
        assert refused.value.code == "user_exists" and status_of(refused.value) == 409
        assert s.scalar(select(text("count(*)")).select_from(User)) == 2


@pytest.mark.parametrize(
    "name",
    [
        "ann\x1e@example.com",  # a control character renders as nothing
        "ann\u200b@example.com",  # zero-width space: two names that render alike
        "moc.elpmaxe@\u202enna",  # a bidi override reorders what follows
    ],
)
def test_names_with_control_or_invisible_characters_are_refused(db, scim, name):
    status, body = scim("POST", "/v2/Users", {"schemas": [USER], "userName": name})
    assert status == 400 and body["scimType"] == "invalidValue", body
    status, body = scim("POST", "/v2/Groups", {"schemas": [GROUP], "displayName": name})
    assert status == 400 and body["scimType"] == "invalidValue", body
    with db.session() as s:
        with pytest.raises(ServiceError) as refused:
            users.create(s, name, actor="test")
        assert refused.value.code == "invalid_user_name"
        assert s.scalar(select(text("count(*)")).select_from(User)) == 0


def test_cli_create_user_refuses_a_look_alike_of_a_scim_user(db, scim, service_ctx):
    renee = _user(scim, RENEE_NFC)
    settings = service_ctx.extensions["devicetrust"].settings
    env = {
        "DEVICETRUST_DATABASE_URL": settings.database_url,
        "DEVICETRUST_DATA_DIR": str(settings.data_dir),
        "DEVICETRUST_PUBLIC_URL": settings.public_url,
    }
    runner = CliRunner()
    out = runner.invoke(
        cli, ["enroll-code", "create", "--user", RENEE_NFD, "--create-user"], env=env
    )
    assert out.exit_code == 1, out.output
    assert "same name as existing user" in out.output and "managed by SCIM" in out.output
    out = runner.invoke(
        cli, ["enroll-code", "create", "--user", "straße@example.com", "--create-user"], env=env
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(
        cli, ["enroll-code", "create", "--user", "STRASSE@example.com", "--create-user"], env=env
    )
    assert out.exit_code == 1 and "same name as existing user" in out.output, out.output
    with db.session() as s:
        rows = s.scalars(select(User.id).where(User.deleted_at.is_(None))).all()
    assert len(rows) == 2 and renee in rows


def test_migration_0016_rekeys_and_parks_collisions(empty_database_url):
    url = empty_database_url
    command.upgrade(alembic_config(url), "0014")
    engine = create_engine(url)
    old = utcnow() - dt.timedelta(days=3)
    newer = utcnow() - dt.timedelta(days=1)
    users_rows = [
        # id, user_name, key as revision 0014 stored it (NFC + lower), scim, created
        ("u-cli", RENEE_NFD, RENEE_NFD.lower(), None, old),
        ("u-scim", RENEE_NFC, RENEE_NFC.lower(), {"userName": RENEE_NFC}, newer),
        ("u-strasse", "strasse@example.com", "strasse@example.com", {}, old),
        ("u-strasse2", "straße@example.com", "straße@example.com", None, newer),
        ("u-ok", "Bob@Example.com", "bob@example.com", None, old),
    ]
    groups_rows = [
        ("g-admins", "devicetrust-admins", "devicetrust-admins", old),
        ("g-looks", LONG_S_GROUP, LONG_S_GROUP, newer),
    ]
    with engine.begin() as conn:
        for uid, name, key, res, created in users_rows:
            conn.execute(
                text(
                    "INSERT INTO users (id, user_name, user_name_lower, active, scim_resource,"
                    " version, created_at, updated_at) VALUES (:id, :n, :k, :a, :r, 1, :c, :c)"
                ),
                {
                    "id": uid,
                    "n": name,
                    "k": key,
                    "a": True,
                    "c": created,
                    "r": json.dumps(res) if res is not None else None,
                },
            )
        for gid, name, key, created in groups_rows:
            conn.execute(
                text(
                    "INSERT INTO groups (id, display_name, display_name_key, version,"
                    " created_at, updated_at) VALUES (:id, :n, :k, 1, :c, :c)"
                ),
                {"id": gid, "n": name, "k": key, "c": created},
            )
    upgrade(url)
    with engine.connect() as conn:
        got = {
            r.id: (r.user_name_lower, bool(r.active))
            for r in conn.execute(text("SELECT id, user_name_lower, active FROM users"))
        }
        keys = dict(conn.execute(text("SELECT id, display_name_key FROM groups")).all())
    engine.dispose()
    assert got == {
        "u-scim": (name_key(RENEE_NFC), True),  # the SCIM-managed row keeps the name
        "u-cli": ("~collision~u-cli", False),
        "u-strasse": ("strasse@example.com", True),
        "u-strasse2": ("~collision~u-strasse2", False),
        "u-ok": ("bob@example.com", True),
    }
    assert keys == {"g-admins": "devicetrust-admins", "g-looks": "~collision~g-looks"}
