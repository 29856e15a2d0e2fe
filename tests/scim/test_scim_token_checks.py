"""SCIM tokens: only under the Bearer scheme, and a rotated-out token only during its grace.

Each layer on its own (the scheme check in ``ScimApplication.authenticate``, the
grace in :func:`idp_service.tokens.match`, in :class:`scim.auth.TokenCache` through
its clock, and in the audit INSERT of :func:`scim.audit.record_use`), then the
real service: a token sent under another scheme is refused, and a rotated-out
token stops working once its grace is over.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select, update
from werkzeug.test import Client

from idp_service import tokens
from idp_service.platform.db import Database, make_engine
from idp_service.platform.models import AuditEvent, utcnow
from idp_service.token_tables import ScimToken
from scim import audit, auth
from scim.app import ScimApplication
from tests.scim_helpers import SCIM_JSON, assert_scim_error, start_scim_service

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _schemes(token: str) -> list[str]:
    """``Authorization`` values that carry the right token under no (or the wrong) scheme."""
    return [f"Basic {token}", f"Token {token}", token, f"{token} Bearer", f"Bearer{token}"]


@pytest.fixture
def scim(migrated_url):
    db = Database(migrated_url)
    with db.session() as session:
        token = tokens.SCIM.create(session, "idp")
    app = ScimApplication(db, public_url="http://scim.test")
    yield db, app, Client(app), token
    db.dispose()


# ---- the scheme -------------------------------------------------------------------------


def test_a_token_under_another_scheme_is_refused_in_process(scim):
    _, _, client, token = scim
    assert client.get("/v2/Users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    for value in _schemes(token):
        r = client.get("/v2/Users", headers={"Authorization": value})
        assert r.status_code == 401, value
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), value


def test_the_scheme_is_read_as_rfc_6750_allows_and_each_refusal_says_why(scim):
    """Found by the mutation run over ``ScimApplication.authenticate`` (2026-12-06)."""
    _, _, client, token = scim
    # The scheme's case does not matter, and whitespace around the token is dropped.
    for value in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token}", f"Bearer {token} "):
        assert client.get("/v2/Users", headers={"Authorization": value}).status_code == 200, value
    # The 401's detail tells a missing token from a wrong one.
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"}):
        r = client.get("/v2/Users", headers=headers)
        assert r.status_code == 401, headers
        assert r.json["detail"] == "A bearer token is required", headers
    r = client.get("/v2/Users", headers={"Authorization": f"Bearer {token}x"})
    assert r.status_code == 401
    assert r.json["detail"] == "The bearer token is not valid"


# ---- the grace, layer by layer ------------------------------------------------------------


def _row(current: str, previous: str | None, until: dt.datetime | None) -> SimpleNamespace:
    return SimpleNamespace(
        id=1,
        name="idp",
        token_hash=tokens.hash_token(current),
        previous_hash=tokens.hash_token(previous) if previous else None,
        previous_valid_until=until,
        last_used_at=None,
    )


def test_match_honours_the_grace_and_then_refuses():
    rows = [_row("new-token", "old-token", T0 + dt.timedelta(seconds=60))]
    old = tokens.hash_token("old-token")
    assert tokens.match(rows, old, T0) is rows[0]
    assert tokens.match(rows, old, T0 + dt.timedelta(seconds=59)) is rows[0]
    assert tokens.match(rows, old, T0 + dt.timedelta(seconds=60)) is None
    assert tokens.match(rows, old, T0 + dt.timedelta(days=365)) is None
    assert tokens.match(rows, tokens.hash_token("new-token"), T0 + dt.timedelta(days=365))
    # Rotated without grace: the old hash is gone at once.
    assert tokens.match([_row("new-token", "old-token", None)], old, T0) is None


def test_the_cache_refuses_the_old_token_once_its_clock_passes_the_grace(scim, monkeypatch):
    db, _, _, old = scim
    with db.session() as session:
        new = tokens.SCIM.rotate(session, "idp", grace_seconds=60)
    cache = auth.TokenCache()
    real_now = auth.utcnow()
    with db.session() as session:
        assert cache.verify(session, old) is not None  # in its grace
        monkeypatch.setattr(auth, "utcnow", lambda: real_now + dt.timedelta(seconds=61))
        assert cache.verify(session, old) is None  # grace over, though cached
        cache.forget()
        assert cache.verify(session, old) is None  # and re-read from the table
        assert cache.verify(session, new) is not None


def test_the_audit_insert_refuses_the_old_token_after_its_grace(scim):
    db, _, _, old = scim
    with db.session() as session:
        tokens.SCIM.rotate(session, "idp", grace_seconds=60)
    grant = auth.TokenCache()
    with db.session() as session:
        found = grant.verify(session, old)
    assert found is not None
    with db.session() as session:
        until = session.scalar(
            ScimToken.__table__.select()
            .with_only_columns(ScimToken.previous_valid_until)
            .where(ScimToken.name == "idp")
        )
    within = {**audit.event("scim.test", "ok", details={}), "at": until - dt.timedelta(seconds=1)}
    after = {**audit.event("scim.test", "ok", details={}), "at": until + dt.timedelta(seconds=1)}
    with db.session() as session:
        assert audit.record_use(session, found, within) is True
        assert audit.record_use(session, found, after) is False


# ---- end to end -------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path, database_url):
    svc, token = start_scim_service(tmp_path, database_url)
    yield svc, token
    svc.stop()


def _get(svc, authorization: str | None) -> httpx.Response:
    headers = {"Accept": SCIM_JSON}
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.get(f"{svc.url}/scim/v2/Users", headers=headers, timeout=30)


def test_e2e_a_token_under_another_scheme_is_refused(live):
    svc, token = live
    assert _get(svc, f"Bearer {token}").status_code == 200
    for value in _schemes(token):
        r = _get(svc, value)
        assert_scim_error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), value


def test_e2e_a_rotated_out_token_stops_after_its_grace(live):
    """The grace ends on the service's own clock: the test moves the grace's end into the
    past (as the clock passing it would) instead of sleeping until it is over."""
    svc, old = live
    rotated = svc.cli_json("scim-token", "rotate", "test", "--grace", "3600")
    assert rotated["grace_seconds"] == 3600
    new = rotated["token"]
    assert _get(svc, f"Bearer {old}").status_code == 200  # in its grace (and now cached)
    assert _get(svc, f"Bearer {new}").status_code == 200
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.begin() as c:
            c.execute(
                update(ScimToken)
                .where(ScimToken.name == "test")
                .values(previous_valid_until=utcnow() - dt.timedelta(seconds=1))
            )
        refused = _get(svc, f"Bearer {old}")
        assert_scim_error(refused, 401)
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert _get(svc, f"Bearer {new}").status_code == 200
        with engine.connect() as c:  # the refused request wrote nothing under the token
            uses = c.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.actor == "scim-token:test", AuditEvent.outcome == "ok")
            ).scalar_one()
        assert uses == 3  # the three accepted requests above, not the refused one
    finally:
        engine.dispose()
