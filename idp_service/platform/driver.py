"""Hand-written statements on the pooled driver connection, for the sign-in hot path.

SQLAlchemy's ORM and Core cost more CPU per statement than the statement itself
costs PostgreSQL; the few statements every sign-in runs go to the driver
(psycopg or sqlite3) directly, through the engine's pool. On PostgreSQL the
connection is in autocommit, so a single statement is a single round trip (no
``BEGIN``/``COMMIT``), and psycopg prepares statements it sees repeatedly. A
multi-statement write that must be atomic is written as one statement (a
data-modifying CTE), never as several autocommitted ones.

Values follow the models' conventions: timestamps are aware UTC datetimes in
Python, stored as ``timestamptz`` on PostgreSQL and as naive UTC text on SQLite
(the form SQLAlchemy's SQLite ``DateTime`` writes, so comparisons agree).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, Boolean, Engine, inspect
from sqlalchemy.orm import Session, configure_mappers

from idp_service.platform.models import Base, UTCDateTime

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


@contextmanager
def driver(engine: Engine) -> Iterator[tuple[Any, bool]]:
    """``(driver connection, is_postgres)`` from the pool; PostgreSQL in autocommit."""
    raw = engine.raw_connection()
    conn: Any = raw.driver_connection  # psycopg's or sqlite3's connection (DB-API: untyped)
    if engine.dialect.name != "postgresql":
        try:
            yield conn, False
        finally:
            raw.close()
        return
    conn.autocommit = True
    try:
        yield conn, True
    finally:
        try:
            conn.autocommit = False
        except Exception:
            # A broken connection must never go back to the pool in autocommit.
            raw.invalidate()
        raw.close()


def sqlite_time(value: dt.datetime) -> str:
    """An aware datetime as SQLite stores it (naive UTC text)."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).strftime(_SQLITE_TIME)


def utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp read from either database as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def from_json(value: Any) -> Any:
    """A JSON column as read from either database (psycopg already parsed it)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def detached_loader(
    model: type[Base], skip: tuple[str, ...] = ()
) -> tuple[list[str], Callable[[Sequence[Any]], Any]]:
    """Column names of ``model`` (less ``skip``) and a function that turns a row of them
    into an instance, with values converted as the ORM would (UTC datetimes, JSON,
    booleans).

    The instances are transient snapshots for reading: not attached to any session,
    never to be added to one; columns in ``skip`` read as None.
    """
    names: list[str] = []
    convert: list[Callable[[Any], Any] | None] = []
    for column in model.__table__.columns:
        if column.name in skip:
            continue
        names.append(column.name)
        if isinstance(column.type, UTCDateTime):
            convert.append(utc)
        elif isinstance(column.type, JSON):
            convert.append(from_json)
        elif isinstance(column.type, Boolean):
            convert.append(lambda v: v if v is None else bool(v))
        else:
            convert.append(None)

    # As the ORM's own loading does: a new instance, its column values put straight into
    # its state (a constructor call would run attribute events for every column).
    new_instance: Callable[[], Any] = inspect(model).class_manager.new_instance

    def load(row: Sequence[Any]) -> Any:
        configure_mappers()  # instruments the classes once; a no-op afterwards
        instance = new_instance()
        instance.__dict__.update(
            (n, f(v) if f else v) for n, f, v in zip(names, convert, row, strict=True)
        )
        return instance

    return names, load


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Statement:
    """A hand-written read, written once with ``:name`` parameters, run on a session's own
    driver connection (in the session's transaction, if any).

    For a small read on a hot path SQLAlchemy's statement machinery (building, cache key,
    compiled-cache lookup, result objects) costs more than the read itself.
    """

    def __init__(self, sql: str) -> None:
        if "%" in sql:
            raise ValueError("a literal % would need escaping for psycopg; pass it as a parameter")
        self.by_dialect = {"sqlite": sql, "postgresql": _NAMED.sub(r"%(\1)s", sql)}

    def rows(self, session: Session, **params: Any) -> list[tuple[Any, ...]]:
        """Every row, as tuples."""
        connection = session.connection()
        conn: Any = connection.connection.driver_connection  # DB-API: untyped
        cursor = conn.cursor()
        try:
            cursor.execute(self.by_dialect[connection.dialect.name], params)
            found: list[tuple[Any, ...]] = cursor.fetchall()
            return found
        finally:
            cursor.close()
