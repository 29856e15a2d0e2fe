"""``platform.db.Upsert``: one INSERT ... ON CONFLICT DO UPDATE for SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select

from idp_service.platform.db import Upsert, make_engine

META = MetaData()
PAIRS = Table(
    "upsert_pairs",
    META,
    Column("a", String(8), primary_key=True),
    Column("b", Integer, primary_key=True),
    Column("value", String(16)),
    Column("hits", Integer),
)
OVERWRITE = Upsert(PAIRS, ["a", "b"], ("value", "hits"))
COUNT = Upsert(
    PAIRS,
    ["a", "b"],
    set_=lambda ins: {"hits": PAIRS.c.hits + ins.excluded.hits},
    values={"a": bindparam("a"), "b": bindparam("b"), "value": None, "hits": bindparam("n")},
    returning=[PAIRS.c.hits],
)


@pytest.fixture
def engine(empty_database_url):
    engine = make_engine(empty_database_url)
    META.create_all(engine)
    yield engine
    engine.dispose()


def _rows(engine):
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(PAIRS)))


def test_a_new_key_is_inserted_and_a_known_one_overwritten(engine):
    stmt = OVERWRITE.statement(engine.dialect.name)
    with engine.begin() as conn:
        conn.execute(
            stmt,
            [
                {"a": "x", "b": 1, "value": "one", "hits": 1},
                {"a": "x", "b": 2, "value": "two", "hits": 2},
            ],
        )
    with engine.begin() as conn:
        conn.execute(stmt, {"a": "x", "b": 1, "value": "uno", "hits": 9})
    # Only the conflicting row changed; the key columns keep identifying it.
    assert _rows(engine) == [("x", 1, "uno", 9), ("x", 2, "two", 2)]


def test_a_custom_set_clause_and_returning(engine):
    stmt = COUNT.statement(engine.dialect.name)
    seen = []
    for n in (1, 2, 3):
        with engine.begin() as conn:
            seen.append(conn.execute(stmt, {"a": "k", "b": 0, "n": n}).scalar_one())
    assert seen == [1, 3, 6]
    assert _rows(engine) == [("k", 0, None, 6)]


def test_the_statement_is_built_once_per_dialect(engine):
    name = engine.dialect.name
    assert OVERWRITE.statement(name) is OVERWRITE.statement(name)
    other = "sqlite" if name == "postgresql" else "postgresql"
    assert OVERWRITE.statement(other) is not OVERWRITE.statement(name)


def test_an_upsert_must_say_what_a_conflict_changes():
    with pytest.raises(ValueError):
        Upsert(PAIRS, ["a", "b"])
