"""Named bearer tokens (idp_service/tokens.py) in process, on SQLite: what ``create``,
``rotate``, ``revoke``, ``list_tokens`` and ``authenticate`` do to the table and the audit
log, every refusal by its message, each bound on both sides, and the comparison itself.

Written for the mutation run over that module: its other callers are the token CLI (run
as a child process) and the SCIM and admin API request paths. Refusals are checked by
their text, which the CLI prints to the administrator. PostgreSQL runs the same code in
tests/scim/test_scim_auth.py and tests/api/test_admin_api.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from idp_service import tokens
from idp_service.platform.db import Database
from idp_service.platform.models import AuditEvent
from idp_service.token_tables import ApiToken, ScimToken

T0 = dt.datetime(2026, 12, 6, 9, 0, 0, tzinfo=dt.UTC)
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{43}")


@pytest.fixture
def db(sqlite_url):
    database = Database(sqlite_url)
    yield database
    database.dispose()


class Clock:
    """``tokens.utcnow``, set by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock(T0)
    monkeypatch.setattr(tokens, "utcnow", fake)
    return fake


def _row(db, kind, name):
    with db.session() as s:
        row = s.scalars(select(kind.table).where(kind.table.name == name)).one()
        s.expunge(row)
        return row


def _events(db, action):
    with db.session() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        )
        return [(e.outcome, e.actor, e.details) for e in rows]


def _create(db, kind, name, scope=None, **kw):
    with db.session() as s:
        return kind.create(s, name, scope, **kw)


def _auth(db, kind, presented):
    with db.session() as s:
        return kind.authenticate(s, presented)


# -- hashing and comparing ----------------------------------------------------------------


def test_hash_token_is_the_sha256_hex_of_the_utf8_text():
    assert tokens.hash_token("dtapi_abc") == hashlib.sha256(b"dtapi_abc").hexdigest()
    assert tokens.hash_token("é") == hashlib.sha256("é".encode()).hexdigest()
    # A lone surrogate (a client can send one through a JSON escape) hashes, never raises.
    assert tokens.hash_token("\ud800") == hashlib.sha256(b"\xed\xa0\x80").hexdigest()


def _r(token_hash=None, previous_hash=None, previous_valid_until=None, name="r"):
    return SimpleNamespace(
        name=name,
        token_hash=token_hash,
        previous_hash=previous_hash,
        previous_valid_until=previous_valid_until,
    )


def test_match_on_the_current_hash_and_on_a_previous_one_in_its_grace():
    now = T0
    current = _r("a" * 64)
    assert tokens.match([current], "a" * 64, now) is current
    assert tokens.match([current], "b" * 64, now) is None
    graced = _r("c" * 64, "d" * 64, now + dt.timedelta(seconds=1))
    assert tokens.match([graced], "d" * 64, now) is graced
    # The grace ends at previous_valid_until itself; no date is no grace.
    assert tokens.match([_r("c" * 64, "d" * 64, now)], "d" * 64, now) is None
    assert (
        tokens.match([_r("c" * 64, "d" * 64, now - dt.timedelta(seconds=1))], "d" * 64, now) is None
    )
    assert tokens.match([_r("c" * 64, "d" * 64, None)], "d" * 64, now) is None
    # A row without the grace columns (an admin-API token) matches on its hash alone.
    api_row = SimpleNamespace(token_hash="e" * 64)
    assert tokens.match([api_row], "e" * 64, now) is api_row
    # Rows without a hash (revoked, or never rotated) never match, whatever is presented.
    empty = _r(None, None, now + dt.timedelta(days=1))
    # A missing hash is compared as "" (a digest is never "": it is 64 hex digits), so
    # neither None nor another stand-in may take its place.
    assert tokens.match([empty], "", now) is empty
    assert tokens.match([empty], "f" * 64, now) is None
    assert tokens.match([empty], "XXXX", now) is None


def test_match_returns_the_first_matching_row_and_looks_at_every_row():
    now = T0
    first, second = _r("a" * 64, name="first"), _r("a" * 64, name="second")
    other = _r("b" * 64, name="other")
    assert tokens.match([other, first, second], "a" * 64, now) is first
    previous = _r("c" * 64, "a" * 64, now + dt.timedelta(seconds=5), name="previous")
    assert tokens.match([previous, first], "a" * 64, now) is previous
    assert tokens.match([first, previous], "a" * 64, now) is first
    assert tokens.match([], "a" * 64, now) is None


# -- create ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "A" * 64, "a.b_c-d", "9-x.Y_"])
def test_create_takes_names_of_1_to_64_characters(db, name):
    token = _create(db, tokens.API, name, "read")
    assert _row(db, tokens.API, name).token_hash == tokens.hash_token(token)


NAME_RULE = (
    "a token name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
)


@pytest.mark.parametrize("name", ["", "A" * 65, "-a", ".a", "_a", "a b", "a/b", "é", "a\n"])
def test_create_refuses_other_names(db, name):
    with pytest.raises(tokens.TokenError) as err:
        _create(db, tokens.API, name, "read")
    assert str(err.value) == NAME_RULE
    with db.session() as s:
        assert s.scalars(select(ApiToken)).all() == []


@pytest.mark.parametrize("scope", [None, "", "admin", "Read", "read,write"])
def test_an_api_token_needs_a_known_scope(db, scope):
    with pytest.raises(tokens.TokenError) as err:
        _create(db, tokens.API, "ci", scope)
    assert str(err.value) == "scope must be one of read, write"


def test_create_stores_the_hash_the_scope_and_audits_without_the_token(db, clock):
    token = _create(db, tokens.API, "ci", "write", actor="admin:alice")
    assert token.startswith("dtapi_") and TOKEN_CHARS.fullmatch(token.removeprefix("dtapi_"))
    row = _row(db, tokens.API, "ci")
    assert (row.scope, row.token_hash, row.created_at) == ("write", tokens.hash_token(token), T0)
    assert (row.revoked_at, row.last_used_at) == (None, None)
    assert _events(db, "api.token.create") == [
        ("ok", "admin:alice", {"name": "ci", "scope": "write"})
    ]
    _create(db, tokens.API, "other", "read")
    assert _events(db, "api.token.create")[-1] == ("ok", "cli", {"name": "other", "scope": "read"})


def test_a_scim_token_has_no_scope_and_its_prefix(db, clock):
    token = _create(db, tokens.SCIM, "okta", "ignored")
    assert token.startswith("dtscim_") and TOKEN_CHARS.fullmatch(token.removeprefix("dtscim_"))
    row = _row(db, tokens.SCIM, "okta")
    assert row.token_hash == tokens.hash_token(token)
    assert (row.previous_hash, row.previous_valid_until, row.rotated_at) == (None, None, None)
    assert _events(db, "scim.token.create") == [("ok", "cli", {"name": "okta"})]


def test_new_tokens_differ():
    assert len({tokens.API.new_token() for _ in range(20)}) == 20


@pytest.mark.parametrize(
    ("kind", "scope", "then"),
    [
        (tokens.API, "read", "revoke it first"),
        (tokens.SCIM, None, "rotate it, or revoke it first"),
    ],
)
def test_a_live_name_cannot_be_made_again(db, kind, scope, then):
    first = _create(db, kind, "dup", scope)
    with pytest.raises(tokens.TokenError) as err:
        _create(db, kind, "dup", scope)
    assert str(err.value) == f"a token named 'dup' exists; {then}"
    assert _row(db, kind, "dup").token_hash == tokens.hash_token(first)


def test_a_revoked_name_is_made_again_from_a_clean_row(db, clock):
    old = _create(db, tokens.SCIM, "okta")
    clock.now = T0 + dt.timedelta(minutes=1)
    with db.session() as s:
        tokens.SCIM.rotate(s, "okta", grace_seconds=600)
    assert _auth(db, tokens.SCIM, old) is not None  # the control: graced
    with db.session() as s:
        tokens.SCIM.revoke(s, "okta")
    with db.session() as s:  # leave a trace in every column create() must reset
        s.execute(
            update(ScimToken).values(
                previous_hash=tokens.hash_token(old),
                previous_valid_until=T0 + dt.timedelta(days=1),
                last_used_at=T0,
            )
        )
    before = _row(db, tokens.SCIM, "okta")
    clock.now = T0 + dt.timedelta(minutes=2)
    new = _create(db, tokens.SCIM, "okta")
    row = _row(db, tokens.SCIM, "okta")
    assert row.id == before.id
    assert row.token_hash == tokens.hash_token(new)
    assert (row.previous_hash, row.previous_valid_until, row.rotated_at) == (None, None, None)
    assert (row.revoked_at, row.last_used_at, row.created_at) == (None, None, clock.now)
    assert _auth(db, tokens.SCIM, old) is None


def test_a_revoked_api_name_is_made_again_with_its_new_scope(db, clock):
    _create(db, tokens.API, "ci", "read")
    with db.session() as s:
        tokens.API.revoke(s, "ci")
    clock.now = T0 + dt.timedelta(hours=1)
    token = _create(db, tokens.API, "ci", "write")
    row = _row(db, tokens.API, "ci")
    assert (row.scope, row.revoked_at, row.created_at) == ("write", None, clock.now)
    assert _auth(db, tokens.API, token).scope == "write"


# -- rotate and revoke ------------------------------------------------------------------


def test_api_tokens_are_not_rotated(db):
    token = _create(db, tokens.API, "ci", "read")
    with pytest.raises(tokens.TokenError) as err, db.session() as s:
        tokens.API.rotate(s, "ci")
    assert str(err.value) == "API tokens are not rotated: revoke it and make a new one"
    assert _auth(db, tokens.API, token) is not None


@pytest.mark.parametrize(
    ("kind", "hint"),
    [(tokens.API, "; see: devicetrust api-token list"), (tokens.SCIM, "")],
)
def test_rotate_and_revoke_need_a_live_name(db, kind, hint):
    _create(db, kind, "gone", "read")
    with db.session() as s:
        kind.revoke(s, "gone")
    for name in ("gone", "never"):
        calls = [lambda s, n=name: kind.revoke(s, n)]
        if kind.rotates:
            calls.append(lambda s, n=name: kind.rotate(s, n))
        for call in calls:
            with pytest.raises(tokens.TokenError) as err, db.session() as s:
                call(s)
            assert str(err.value) == f"no live token named {name!r}{hint}"


def test_rotate_without_grace_ends_the_old_token_at_once(db, clock):
    old = _create(db, tokens.SCIM, "okta")
    clock.now = T0 + dt.timedelta(seconds=5)
    with db.session() as s:
        new = tokens.SCIM.rotate(s, "okta")
    assert new != old and new.startswith("dtscim_")
    row = _row(db, tokens.SCIM, "okta")
    assert row.token_hash == tokens.hash_token(new)
    assert (row.previous_hash, row.previous_valid_until, row.rotated_at) == (None, None, clock.now)
    assert _auth(db, tokens.SCIM, old) is None
    assert _auth(db, tokens.SCIM, new).name == "okta"
    assert _events(db, "scim.token.rotate") == [("ok", "cli", {"name": "okta", "grace_seconds": 0})]


def test_rotate_with_grace_keeps_the_old_token_until_its_end(db, clock):
    old = _create(db, tokens.SCIM, "okta")
    with db.session() as s:
        new = tokens.SCIM.rotate(s, "okta", grace_seconds=1, actor="admin:bob")
    row = _row(db, tokens.SCIM, "okta")
    assert row.previous_hash == tokens.hash_token(old)
    assert row.previous_valid_until == T0 + dt.timedelta(seconds=1)
    assert _auth(db, tokens.SCIM, old).name == "okta"
    assert _auth(db, tokens.SCIM, new).name == "okta"
    clock.now = T0 + dt.timedelta(seconds=1)  # the grace's last instant is past
    assert _auth(db, tokens.SCIM, old) is None
    assert _auth(db, tokens.SCIM, new).name == "okta"
    assert _events(db, "scim.token.rotate") == [
        ("ok", "admin:bob", {"name": "okta", "grace_seconds": 1})
    ]


def test_a_negative_grace_is_refused_and_changes_nothing(db, clock):
    old = _create(db, tokens.SCIM, "okta")
    with pytest.raises(tokens.TokenError) as err, db.session() as s:
        tokens.SCIM.rotate(s, "okta", grace_seconds=-1)
    assert str(err.value) == "the grace period cannot be negative"
    assert _row(db, tokens.SCIM, "okta").token_hash == tokens.hash_token(old)
    assert _events(db, "scim.token.rotate") == []


def test_revoke_ends_the_token_and_its_graced_predecessor(db, clock):
    old = _create(db, tokens.SCIM, "okta")
    other = _create(db, tokens.SCIM, "azure")
    with db.session() as s:
        new = tokens.SCIM.rotate(s, "okta", grace_seconds=600)
    clock.now = T0 + dt.timedelta(seconds=3)
    with db.session() as s:
        tokens.SCIM.revoke(s, "okta", actor="admin:carol")
    row = _row(db, tokens.SCIM, "okta")
    assert (row.revoked_at, row.token_hash) == (clock.now, None)
    assert (row.previous_hash, row.previous_valid_until) == (None, None)
    assert _auth(db, tokens.SCIM, old) is None and _auth(db, tokens.SCIM, new) is None
    assert _auth(db, tokens.SCIM, other).name == "azure"
    assert _events(db, "scim.token.revoke") == [("ok", "admin:carol", {"name": "okta"})]


def test_revoke_an_api_token(db, clock):
    token = _create(db, tokens.API, "ci", "read")
    with db.session() as s:
        tokens.API.revoke(s, "ci")
    row = _row(db, tokens.API, "ci")
    assert (row.revoked_at, row.token_hash) == (T0, None)
    assert _auth(db, tokens.API, token) is None
    assert _events(db, "api.token.revoke") == [("ok", "cli", {"name": "ci"})]


# -- list -------------------------------------------------------------------------------


def test_list_shows_every_token_by_name_never_the_token(db, clock):
    _create(db, tokens.API, "zeta", "write")
    _create(db, tokens.API, "alpha", "read")
    with db.session() as s:
        tokens.API.revoke(s, "zeta")
    with db.session() as s:
        listed = tokens.API.list_tokens(s)
    iso = T0.isoformat()
    assert listed == [
        {
            "name": "alpha",
            "scope": "read",
            "state": "active",
            "created_at": iso,
            "revoked_at": None,
            "last_used_at": None,
        },
        {
            "name": "zeta",
            "scope": "write",
            "state": "revoked",
            "created_at": iso,
            "revoked_at": iso,
            "last_used_at": None,
        },
    ]


def test_list_shows_a_scim_token_s_rotation(db, clock):
    token = _create(db, tokens.SCIM, "okta")
    clock.now = T0 + dt.timedelta(seconds=10)
    with db.session() as s:
        tokens.SCIM.rotate(s, "okta", grace_seconds=60)
    _auth(db, tokens.SCIM, token)
    with db.session() as s:
        listed = tokens.SCIM.list_tokens(s)
    assert listed == [
        {
            "name": "okta",
            "state": "active",
            "created_at": T0.isoformat(),
            "rotated_at": clock.now.isoformat(),
            "revoked_at": None,
            "last_used_at": clock.now.isoformat(),
            "previous_valid_until": (clock.now + dt.timedelta(seconds=60)).isoformat(),
        }
    ]


# -- authenticate -------------------------------------------------------------------------


def test_authenticate_returns_the_live_row_with_its_name_and_scope(db, clock):
    reader = _create(db, tokens.API, "reader", "read")
    writer = _create(db, tokens.API, "writer", "write")
    found = _auth(db, tokens.API, writer)
    assert (found.name, found.scope, found.id) == (
        "writer",
        "write",
        _row(db, tokens.API, "writer").id,
    )
    assert _auth(db, tokens.API, reader).scope == "read"
    assert _auth(db, tokens.API, "dtapi_unknown") is None
    assert _auth(db, tokens.API, writer + " ") is None
    # A SCIM token is not an API token, and the reverse.
    assert _auth(db, tokens.SCIM, writer) is None


def test_authenticate_a_never_rotated_scim_token(db, clock):
    token = _create(db, tokens.SCIM, "okta")
    found = _auth(db, tokens.SCIM, token)
    assert found.name == "okta"
    assert (found.previous_hash, found.previous_valid_until) == (None, None)


def test_last_used_is_written_on_first_use_then_at_most_once_a_minute(db, clock):
    token = _create(db, tokens.API, "ci", "read")
    other = _create(db, tokens.API, "other", "read")
    _auth(db, tokens.API, token)
    assert _row(db, tokens.API, "ci").last_used_at == T0
    assert _row(db, tokens.API, "other").last_used_at is None  # only the token used
    clock.now = T0 + tokens.LAST_USED_RESOLUTION  # exactly a minute: not yet
    _auth(db, tokens.API, token)
    assert _row(db, tokens.API, "ci").last_used_at == T0
    later = T0 + tokens.LAST_USED_RESOLUTION + dt.timedelta(microseconds=1)
    clock.now = later
    found = _auth(db, tokens.API, token)
    assert found.name == "ci"
    assert _row(db, tokens.API, "ci").last_used_at == later
    assert _row(db, tokens.API, "other").last_used_at is None
    _auth(db, tokens.API, other)
    assert _row(db, tokens.API, "other").last_used_at == later


def test_live_rows_are_the_usable_tokens_only(db, clock):
    _create(db, tokens.SCIM, "live")
    _create(db, tokens.SCIM, "dead")
    _create(db, tokens.SCIM, "rotated")
    with db.session() as s:
        tokens.SCIM.revoke(s, "dead")
        tokens.SCIM.rotate(s, "rotated", grace_seconds=60)
    with db.session() as s:
        rows = tokens.SCIM.live_rows(s)
    assert sorted(r.name for r in rows) == ["live", "rotated"]
    _create(db, tokens.API, "api-live", "write")
    _create(db, tokens.API, "api-dead", "read")
    with db.session() as s:
        tokens.API.revoke(s, "api-dead")
    with db.session() as s:
        (row,) = tokens.API.live_rows(s)
    assert (row.name, row.scope, row.last_used_at) == ("api-live", "write", None)


def test_live_rows_read_the_columns_whatever_wrote_them(db, clock):
    """The filter itself, on rows that only a manual UPDATE (or another version) leaves:
    revoked_at set wins over a hash still present; a row with no hash at all is not
    usable; a previous hash alone is (within its grace, for authenticate)."""
    marked = _create(db, tokens.SCIM, "marked")
    _create(db, tokens.SCIM, "hashless")
    graced = _create(db, tokens.SCIM, "graced-only")
    api_marked = _create(db, tokens.API, "api-marked", "read")
    with db.session() as s:
        s.execute(update(ScimToken).where(ScimToken.name == "marked").values(revoked_at=T0))
        s.execute(update(ScimToken).where(ScimToken.name == "hashless").values(token_hash=None))
        s.execute(
            update(ScimToken)
            .where(ScimToken.name == "graced-only")
            .values(
                token_hash=None,
                previous_hash=tokens.hash_token(graced),
                previous_valid_until=T0 + dt.timedelta(seconds=30),
            )
        )
        s.execute(update(ApiToken).where(ApiToken.name == "api-marked").values(revoked_at=T0))
    with db.session() as s:
        assert [r.name for r in tokens.SCIM.live_rows(s)] == ["graced-only"]
        assert tokens.API.live_rows(s) == []
    assert _auth(db, tokens.SCIM, marked) is None
    assert _auth(db, tokens.API, api_marked) is None
    assert _auth(db, tokens.SCIM, graced).name == "graced-only"
