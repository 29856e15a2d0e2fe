"""The per-process token cache never lets a revoked or rotated-away token through.

In-process (the ScimApplication on a migrated database, SQLite and PostgreSQL):
the cache saves reading the token table, and the request's audit INSERT checks
the token again in the request's own transaction. These tests revoke, rotate
and create tokens behind the application's back (in other sessions, as the CLI
on another host would) and check that the very next request sees it, and that a
request whose token dies while it runs is rolled back and answered 401.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import func, select, update
from werkzeug.test import Client

from idp_service import tokens
from idp_service.platform.db import Database
from idp_service.platform.models import AuditEvent, User
from idp_service.token_tables import ScimToken
from scim.app import ScimApplication
from tests.scim_helpers import user_body


@pytest.fixture
def scim(migrated_url):
    db = Database(migrated_url)
    with db.session() as session:
        token = tokens.SCIM.create(session, "okta")
    app = ScimApplication(db, public_url="http://scim.test")
    yield db, app, Client(app), token
    db.dispose()


def _post_user(client: Client, token: str, name: str | None = None):
    return client.post(
        "/v2/Users",
        data=json.dumps(user_body(name or f"{uuid.uuid4().hex}@example.com")),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
    )


def _get(client: Client, token: str):
    return client.get("/v2/Users", headers={"Authorization": f"Bearer {token}"})


def _users(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(User)) or 0


def test_a_cached_token_revoked_elsewhere_is_refused_at_once(scim):
    db, app, client, token = scim
    assert _get(client, token).status_code == 200  # now in the cache
    with db.session() as session:
        tokens.SCIM.revoke(session, "okta")
    before = _users(db)
    response = _post_user(client, token)
    assert response.status_code == 401, response.get_data()
    assert _users(db) == before  # the write was rolled back
    assert _get(client, token).status_code == 401


def test_a_token_revoked_while_its_request_runs_is_rolled_back(scim):
    db, app, client, token = scim
    assert _get(client, token).status_code == 200
    handle = app.handler.handle

    def revoke_then_handle(request):
        with db.session() as session:  # another transaction, as the CLI would
            tokens.SCIM.revoke(session, "okta")
        return handle(request)

    app.handler.handle = revoke_then_handle
    before = _users(db)
    response = _post_user(client, token)
    assert response.status_code == 401, response.get_data()
    assert json.loads(response.get_data())["detail"] == "The bearer token is not valid"
    assert _users(db) == before
    with db.session() as session:
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.outcome) == ("scim.auth", "denied")


def test_a_refusal_found_with_a_dead_token_becomes_a_401(scim):
    db, app, client, token = scim
    taken = f"{uuid.uuid4().hex}@example.com"
    assert _post_user(client, token, taken).status_code == 201
    with db.session() as session:
        tokens.SCIM.revoke(session, "okta")
    # The handler would answer 409; a revoked token learns nothing from it.
    assert _post_user(client, token, taken).status_code == 401


def test_rotation_takes_effect_at_once_and_honours_the_grace(scim):
    db, app, client, token = scim
    assert _get(client, token).status_code == 200
    with db.session() as session:
        graced = tokens.SCIM.rotate(session, "okta", grace_seconds=300)
    assert _get(client, graced).status_code == 200  # unknown to the cache: re-read
    assert _post_user(client, token).status_code == 201  # the old one, in its grace
    with db.session() as session:
        session.execute(
            update(ScimToken)
            .where(ScimToken.name == "okta")
            .values(previous_valid_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert _post_user(client, token).status_code == 401  # grace over: cached, yet refused
    assert _post_user(client, graced).status_code == 201


def test_a_new_token_works_at_once_and_a_wrong_one_never(scim):
    db, app, client, token = scim
    assert _get(client, token).status_code == 200
    with db.session() as session:
        script = tokens.SCIM.create(session, "migration-script")
    assert _get(client, script).status_code == 200
    assert _get(client, "dtscim_" + "x" * 43).status_code == 401
    assert _get(client, token + "x").status_code == 401


def test_the_copy_saves_the_read_until_it_is_old(migrated_url):
    """A known token is checked against the copy; an old copy is read again."""
    from sqlalchemy import event

    from scim.auth import TokenCache

    db = Database(migrated_url)
    try:
        with db.session() as session:
            token = tokens.SCIM.create(session, "okta")
        reads: list[str] = []

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(conn, cursor, statement, params, context, executemany):
            if statement.lstrip().upper().startswith("SELECT") and "scim_tokens" in statement:
                reads.append(statement)

        cache = TokenCache()
        for _ in range(3):
            with db.session() as session:
                grant = cache.verify(session, token)
            assert grant is not None and grant.name == "okta"
        assert len(reads) == 1  # the first request read the table; the others used the copy

        stale = TokenCache(seconds=0.0)
        for _ in range(2):
            with db.session() as session:
                assert stale.verify(session, token) is not None
        assert len(reads) == 3  # a copy past its age is never used
    finally:
        db.dispose()


def test_last_used_recorded_by_another_process_is_not_rewritten(migrated_url):
    """A fresh process trusts a recent last_used_at from the table (one write a minute)."""
    from idp_service.platform.models import utcnow
    from scim.auth import TokenCache

    db = Database(migrated_url)
    try:
        with db.session() as session:
            token = tokens.SCIM.create(session, "okta")
        recent = (utcnow() - dt.timedelta(seconds=5)).replace(microsecond=0)
        with db.session() as session:
            session.execute(update(ScimToken).values(last_used_at=recent))
        with db.session() as session:
            assert TokenCache().verify(session, token) is not None
        with db.session() as session:
            stored = session.scalar(select(ScimToken.last_used_at))
        assert stored.replace(tzinfo=None) == recent.replace(tzinfo=None)
    finally:
        db.dispose()


def test_first_use_is_recorded_on_that_token_only(migrated_url):
    from scim.auth import TokenCache

    db = Database(migrated_url)
    try:
        with db.session() as session:
            okta = tokens.SCIM.create(session, "okta")
            tokens.SCIM.create(session, "entra")
        with db.session() as session:
            assert TokenCache().verify(session, okta) is not None
        with db.session() as session:
            used = dict(session.execute(select(ScimToken.name, ScimToken.last_used_at)).all())
        assert used["okta"] is not None and used["entra"] is None
    finally:
        db.dispose()


def test_a_graced_old_token_works_in_a_process_that_never_saw_it(migrated_url):
    """The table read (not only the copy) honours a rotated token's grace."""
    from scim.auth import TokenCache

    db = Database(migrated_url)
    try:
        with db.session() as session:
            old = tokens.SCIM.create(session, "okta")
        with db.session() as session:
            tokens.SCIM.rotate(session, "okta", grace_seconds=300)
        with db.session() as session:
            grant = TokenCache().verify(session, old)
        assert grant is not None and grant.name == "okta"
    finally:
        db.dispose()
