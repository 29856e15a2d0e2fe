"""The console's sessions, CSRF check and login completer (idp_service/admin/auth.py) in
process, on SQLite: what the browser's cookie holds after each step, which server-side
row it names and how that row ends, who the CSRF refusal's audit names, and every page
``complete_login`` answers (the refusal's message for each code).

Written for the mutation run over that module. The same flows run on both databases in
test_admin_console.py, test_admin_session_revocation.py and test_admin_session_rights.py;
here each fact is checked where the module decides it.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from flask import session as flask_session
from markupsafe import escape
from sqlalchemy import delete, func, select, update

from idp_service.admin import auth, bootstrap
from idp_service.admin.tables import AdminSession
from idp_service.app import create_app
from idp_service.directory.tables import Group, GroupMember
from idp_service.platform.config import Settings
from idp_service.platform.models import AuditEvent, Device, LoginTransaction, User, utcnow
from idp_service.signin.messages import MESSAGES
from idp_service.upstream.tables import UpstreamLogin
from tests.admin_helpers import csrf_of, make_admin_group, make_device, make_user


@pytest.fixture
def app(sqlite_service_ctx):
    return sqlite_service_ctx


@pytest.fixture
def db(app):
    return app.extensions["devicetrust"].db


@pytest.fixture
def world(db):
    """alice (admin, trusted laptop) and bob (not admin, trusted desktop)."""
    with db.session() as s:
        alice, bob = make_user(s, "alice@example.com"), make_user(s, "bob@example.com")
        make_admin_group(s, alice)
        return {
            "alice": alice.id,
            "bob": bob.id,
            "laptop": make_device(s, alice, state="trusted").id,
            "desktop": make_device(s, bob, state="trusted").id,
        }


def _cookie(client) -> dict:
    with client.session_transaction() as sess:
        return dict(sess)


def _rows(db) -> list[AdminSession]:
    with db.session() as s:
        rows = list(s.scalars(select(AdminSession).order_by(AdminSession.created_at)))
        for row in rows:
            s.expunge(row)
        return rows


def _events(db, action):
    with db.session() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
        return [(e.outcome, e.code, e.actor, e.remote_addr, e.details) for e in rows]


def _bootstrap(app, db, client=None):
    client = client or app.test_client()
    with db.session() as s:
        token, _ = bootstrap.issue(s, actor="test")
    csrf = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    resp = client.post("/admin/bootstrap", data={"token": token, "csrf": csrf})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
    return client


def _txn(db, user_id, device_id, *, status="verified", error_code=None, completed=False):
    now = utcnow()
    with db.session() as s:
        txn = LoginTransaction(
            id=f"t{now.timestamp():.6f}".replace(".", ""),
            status=status,
            error_code=error_code,
            user_id=user_id,
            device_id=device_id,
            context={"kind": "admin"},
            expires_at=now + dt.timedelta(minutes=5),
            verified_at=now if status == "verified" else None,
            completed_at=now if completed else None,
        )
        s.add(txn)
    return txn.id


def _own(client, *txn_ids):
    with client.session_transaction() as sess:
        sess["login_txns"] = list(txn_ids)


def _device_signin(app, db, world, client=None):
    client = client or app.test_client()
    txn = _txn(db, world["alice"], world["laptop"])
    _own(client, txn)
    resp = client.get(f"/login/{txn}/continue")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/", resp.data
    return client, txn


def _admin_group(s) -> str:
    return s.scalar(select(Group.id).where(Group.display_name_key == "devicetrust-admins"))


def _refusal(resp, code: str, message: str) -> None:
    assert resp.status_code == 403
    text = resp.get_data(as_text=True)
    assert f'<p id="refusal">{escape(message)}</p>' in text
    assert f"<code>{code}</code>" in text


# -- Admin, CSRF ------------------------------------------------------------------------------


def test_the_admin_is_named_by_user_name_in_the_audit():
    assert auth.Admin("alice@example.com", "device").actor == "admin:alice@example.com"


def test_the_csrf_token_is_made_once_per_browser(app):
    client = app.test_client()
    first = csrf_of(client.get("/admin/signin").get_data(as_text=True))
    assert len(first) >= 32 and _cookie(client)["admin_csrf"] == first
    assert csrf_of(client.get("/admin/bootstrap").get_data(as_text=True)) == first
    other = csrf_of(app.test_client().get("/admin/signin").get_data(as_text=True))
    assert other != first


def test_a_post_without_the_token_is_refused_and_audited_by_who_sent_it(app, db, world):
    client = _bootstrap(app, db)
    (row,) = _rows(db)
    for data in ({}, {"csrf": "x" * 43}):
        resp = client.post("/admin/signout", data=data)
        assert resp.status_code == 403 and b"csrf_invalid" in resp.data
    assert (
        _events(db, "admin.csrf")
        == [
            ("rejected", "csrf_invalid", "admin:bootstrap", "127.0.0.1", {"path": "/admin/signout"})
        ]
        * 2
    )
    assert _rows(db)[0].ended_at is None and "admin" in _cookie(client)  # not signed out
    assert _events(db, "admin.signout") == []
    # Signed out, the refusal names nobody.
    stranger = app.test_client()
    stranger.get("/admin/signin")
    assert stranger.post("/admin/signout", data={"csrf": "y" * 43}).status_code == 403
    assert _events(db, "admin.csrf")[-1] == (
        "rejected",
        "csrf_invalid",
        None,
        "127.0.0.1",
        {"path": "/admin/signout"},
    )
    # With the token, the same POST signs out.
    csrf = csrf_of(client.get("/admin/").get_data(as_text=True))
    resp = client.post("/admin/signout", data={"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/signin"
    assert len(_events(db, "admin.csrf")) == 3 and row.id == _rows(db)[0].id


# -- open, end, load -----------------------------------------------------------------------


def test_signing_in_starts_a_fresh_cookie_a_new_row_and_a_new_csrf_token(app, db):
    client = app.test_client()
    before = csrf_of(client.get("/admin/bootstrap").get_data(as_text=True))
    _own(client, "some-login-txn")
    _bootstrap(app, db, client)
    cookie = _cookie(client)
    assert set(cookie) == {"admin", "admin_csrf"}  # the login transactions were dropped
    assert cookie["admin_csrf"] != before
    secret = cookie["admin"]["sid"]
    assert set(cookie["admin"]) == {"sid"}
    (row,) = _rows(db)
    assert row.id == hashlib.sha256(secret.encode()).hexdigest()
    assert (row.via, row.user_name, row.user_id, row.device_id) == (
        "bootstrap",
        "bootstrap",
        None,
        None,
    )
    ttl = app.extensions["devicetrust"].settings.admin_session_ttl
    assert abs((row.expires_at - row.created_at).total_seconds() - ttl) < 1
    assert client.get("/admin/").status_code == 200


def test_signing_in_again_ends_the_previous_row_as_replaced(app, db):
    client = _bootstrap(app, db)
    _bootstrap(app, db, client)
    first, second = _rows(db)
    assert (first.ended_reason, second.ended_at) == ("replaced", None)
    assert first.ended_at is not None


@pytest.mark.parametrize("junk", ["a-string", {"sid": 5}, {"other": "x"}, None, 7])
def test_a_cookie_with_junk_for_a_session_is_signed_out_and_can_sign_in(app, db, junk):
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["admin"] = junk
    assert client.get("/admin/").status_code == 303
    assert "admin" not in _cookie(client)
    with client.session_transaction() as sess:
        sess["admin"] = junk
    _bootstrap(app, db, client)
    assert client.get("/admin/").status_code == 200
    with app.test_request_context("/admin/signout", method="POST"):
        flask_session["admin"] = junk
        flask_session["admin_csrf"] = "kept?"
        auth.end_session("signout")
        assert dict(flask_session) == {}
    assert _rows(db)[0].ended_at is None  # junk names no row to end


def test_sign_out_ends_the_row_and_empties_the_cookie(app, db):
    client = _bootstrap(app, db)
    copied = _cookie(client)
    csrf = csrf_of(client.get("/admin/").get_data(as_text=True))
    assert client.post("/admin/signout", data={"csrf": csrf}).status_code == 303
    assert _cookie(client) == {}
    (row,) = _rows(db)
    assert row.ended_reason == "signout" and row.ended_at is not None
    assert _events(db, "admin.signout") == [("ok", None, "admin:bootstrap", "127.0.0.1", None)]
    thief = app.test_client()
    with thief.session_transaction() as sess:
        sess.update(copied)
    assert thief.get("/admin/").status_code == 303


def test_a_row_ended_elsewhere_signs_the_browser_out(app, db):
    client = _bootstrap(app, db)
    with db.session() as s:
        s.execute(update(AdminSession).values(ended_at=utcnow(), ended_reason="test"))
    assert client.get("/admin/").status_code == 303
    assert "admin" not in _cookie(client)


def test_a_signed_out_browser_keeps_what_else_its_cookie_holds(app):
    client = app.test_client()
    _own(client, "a-login")
    assert client.get("/admin/").status_code == 303
    assert _cookie(client)["login_txns"] == ["a-login"]


def test_current_admin_is_read_once_per_request(app, db, world):
    client, _ = _device_signin(app, db, world)
    secret = _cookie(client)["admin"]["sid"]
    (row,) = _rows(db)
    with app.test_request_context("/admin/"):
        flask_session["admin"] = {"sid": secret}
        admin = auth.current_admin()
        assert admin == auth.Admin(
            user_name="alice@example.com",
            via="device",
            user_id=world["alice"],
            device_id=world["laptop"],
            session_id=row.id,
        )
        with db.session() as s:
            s.execute(update(AdminSession).values(ended_at=utcnow(), ended_reason="test"))
        assert auth.current_admin() is admin  # this request decided already
    with app.test_request_context("/admin/"):
        flask_session["admin"] = {"sid": secret}
        assert auth.current_admin() is None  # the next one reads the row again
        assert "admin" not in flask_session


@pytest.mark.parametrize(
    ("change", "reason"),
    [("group", "not_admin"), ("device", "device_not_trusted"), ("user", "owner_inactive")],
)
def test_a_failed_recheck_ends_the_row_for_good(app, db, world, change, reason):
    client, _ = _device_signin(app, db, world)
    assert client.get("/admin/").status_code == 200
    with db.session() as s:
        if change == "group":
            s.execute(delete(GroupMember).where(GroupMember.value == world["alice"]))
        elif change == "device":
            s.get(Device, world["laptop"]).state = "revoked"
        else:
            s.get(User, world["alice"]).active = False
    assert client.get("/admin/").status_code == 303
    (row,) = _rows(db)
    assert row.ended_reason == reason and row.ended_at is not None
    with db.session() as s:  # restoring the fact does not revive the session
        if change == "group":
            s.add(GroupMember(group_id=_admin_group(s), value=world["alice"], type="User"))
        elif change == "device":
            s.get(Device, world["laptop"]).state = "trusted"
        else:
            s.get(User, world["alice"]).active = True
    with client.session_transaction() as sess:
        sess["admin"] = {"sid": "x" * 43}
    assert client.get("/admin/").status_code == 303


# -- complete_login ------------------------------------------------------------------------------


def test_a_verified_admin_gets_a_device_session(app, db, world):
    client, txn = _device_signin(app, db, world)
    cookie = _cookie(client)
    assert cookie["login_txns"] == [txn]  # remembered, for a repeated /continue
    (row,) = _rows(db)
    assert row.id == hashlib.sha256(cookie["admin"]["sid"].encode()).hexdigest()
    assert (row.via, row.user_name, row.user_id, row.device_id) == (
        "device",
        "alice@example.com",
        world["alice"],
        world["laptop"],
    )
    assert [e[:4] for e in _events(db, "admin.login")] == [
        ("ok", None, "admin:alice@example.com", "127.0.0.1")
    ]
    # The same /continue again: the console, without a second session or login.
    again = client.get(f"/login/{txn}/continue")
    assert again.status_code == 303 and again.headers["Location"] == "/admin/"
    assert len(_rows(db)) == 1 and len(_events(db, "admin.login")) == 1


def test_a_repeat_in_another_browser_is_already_used(app, db, world):
    _, txn = _device_signin(app, db, world)
    other = app.test_client()
    _own(other, txn)
    _refusal(
        other.get(f"/login/{txn}/continue"),
        "login_finished",
        "This sign-in was already used. Start again.",
    )
    assert "admin" not in _cookie(other) and len(_rows(db)) == 1


def test_a_repeat_while_signed_in_otherwise_is_already_used(app, db, world):
    # Signed in by bootstrap token, or as another admin: a finished sign-in is not reused.
    client = _bootstrap(app, db)
    done = _txn(db, world["alice"], world["laptop"], completed=True)
    _own(client, done)
    _refusal(
        client.get(f"/login/{done}/continue"),
        "login_finished",
        "This sign-in was already used. Start again.",
    )
    with db.session() as s:
        carol = make_user(s, "carol@example.com")
        carol_id = carol.id
        s.add(GroupMember(group_id=_admin_group(s), value=carol.id, type="User"))
        carol_device = make_device(s, carol, state="trusted").id
    signed_in, _ = _device_signin(app, db, world)
    other_done = _txn(db, carol_id, carol_device, completed=True)
    _own(signed_in, other_done)
    _refusal(
        signed_in.get(f"/login/{other_done}/continue"),
        "login_finished",
        "This sign-in was already used. Start again.",
    )


def test_a_user_outside_the_admin_group_is_refused(app, db, world):
    client = app.test_client()
    txn = _txn(db, world["bob"], world["desktop"])
    _own(client, txn)
    _refusal(
        client.get(f"/login/{txn}/continue"),
        "not_admin",
        "Your account is not an administrator of this console.",
    )
    assert _rows(db) == [] and "admin" not in _cookie(client)


@pytest.mark.parametrize("code", ["device_revoked", "device_pending", "no_such_code"])
def test_a_failed_device_check_shows_its_message(app, db, world, code):
    txn_id = _txn(db, world["alice"], world["laptop"], status="denied", error_code=code)
    with db.session() as s:
        txn = s.get(LoginTransaction, txn_id)
        user, device = s.get(User, world["alice"]), s.get(Device, world["laptop"])
        s.expunge_all()
    with app.test_request_context(f"/login/{txn_id}/continue"):
        resp = auth.complete_login(txn, user, device)
        assert "admin" not in flask_session
    message = MESSAGES.get(code, "The device check failed.")
    _refusal(resp, code, message)
    assert _rows(db) == []


# -- the console's upstream sign-in ------------------------------------------------------------


@pytest.fixture
def upstream_app(sqlite_url, tmp_path):
    """The service with an upstream IdP marked for the console (never contacted here)."""
    path = tmp_path / "upstream.toml"
    path.write_text(
        "\n".join(
            [
                "[[idp]]",
                'id = "corp"',
                'name = "Corp IdP"',
                'issuer = "https://idp.invalid"',
                'client_id = "devicetrust"',
                'client_secret = "s3cret-s3cret-s3cret"',
                'claim = "email"',
                "console = true",
            ]
        )
        + "\n"
    )
    app = create_app(
        Settings.from_env(
            {
                "DEVICETRUST_DATABASE_URL": sqlite_url,
                "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
                "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
                "DEVICETRUST_RATELIMIT_ENABLED": "false",
                "DEVICETRUST_UPSTREAM_IDPS": str(path),
            }
        )
    )
    yield app
    app.extensions["devicetrust"].db.dispose()


def _proved(db, txn: str, user_id: str, purpose: str = "admin") -> None:
    with db.session() as s:
        s.add(
            UpstreamLogin(
                state_hash=hashlib.sha256(f"{txn}{user_id}{purpose}".encode()).hexdigest(),
                idp="corp",
                txn_id=txn,
                purpose=purpose,
                nonce="n",
                code_verifier="v",
                expires_at=utcnow() + dt.timedelta(minutes=5),
                used_at=utcnow(),
                user_id=user_id,
                verified_at=utcnow(),
            )
        )


@pytest.mark.parametrize("proof", ["owner", "someone else", "other purpose", "none"])
def test_with_a_console_idp_the_upstream_sign_in_must_prove_the_owner(upstream_app, proof):
    db = upstream_app.extensions["devicetrust"].db
    with db.session() as s:
        alice, bob = make_user(s, "alice@example.com"), make_user(s, "bob@example.com")
        make_admin_group(s, alice)
        ids = {
            "alice": alice.id,
            "bob": bob.id,
            "laptop": make_device(s, alice, state="trusted").id,
        }
    txn = _txn(db, ids["alice"], ids["laptop"])
    if proof == "owner":
        _proved(db, txn, ids["alice"])
    elif proof == "someone else":
        _proved(db, txn, ids["bob"])
    elif proof == "other purpose":
        _proved(db, txn, ids["alice"], purpose="approve")
    client = upstream_app.test_client()
    _own(client, txn)
    resp = client.get(f"/login/{txn}/continue")
    if proof == "owner":
        assert resp.status_code == 303 and resp.headers["Location"] == "/admin/"
        assert client.get("/admin/").status_code == 200
    else:
        _refusal(
            resp,
            "upstream_required",
            "Sign in to the console with your organization's identity provider, as the owner "
            "of this device. Start again.",
        )
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(AdminSession)) == 0
