"""Engine and session set-up for SQLite and PostgreSQL.

One :class:`Database` per process. SQLite gets WAL mode and a busy timeout so
that the service and the CLI can share a file; PostgreSQL gets a small pool.

Pooled PostgreSQL connections are pinged before use only when they sat idle for
more than :data:`PING_AFTER_IDLE` seconds: a connection returned a moment ago is
alive, and pinging it on every checkout (``pool_pre_ping``) would add a round
trip to every database use of every request. A server restart is still noticed:
idle connections are pinged, and the first statement that fails on a dead busy
one makes SQLAlchemy invalidate the whole pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the settings devicetrust needs for ``url``."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=NullPool if url in ("sqlite://", "sqlite:///:memory:") else None,
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20, **kwargs)
    _ping_idle_connections(engine)
    return engine


PING_AFTER_IDLE = 5.0  # seconds


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout if it sat idle for more than PING_AFTER_IDLE."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE:
            return  # fresh from connect, or returned a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # The pool invalidates this connection and checks out (or opens) another.
            raise exc.DisconnectionError() from error


class Database:
    """An engine plus a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any exception."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only, on an autocommit connection: each statement is one
        round trip, with no ``BEGIN``/``COMMIT`` around them. Never write through it."""
        with (
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
            Session(bind=conn) as session,
        ):
            yield session

    @property
    def is_postgres(self) -> bool:
        """True when the backend is PostgreSQL."""
        return self.engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def dialect_insert(dialect: str) -> Callable[[Any], Any]:
    """The ``INSERT`` construct of ``dialect`` (PostgreSQL or SQLite): the one with ON CONFLICT."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class Upsert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE``, built once per dialect and then reused.

    The statement is built the first time a dialect asks for it (hot paths build
    nothing per call, and SQLAlchemy caches its compiled form); execute it with
    one row's or many rows' parameters. A conflict overwrites the ``update``
    columns with the new row's values, or, when given, applies ``set_(insert)``:
    the SET clause built from the INSERT (its ``excluded`` row, ``case`` ...).
    ``values`` (e.g. bound parameters) and ``returning`` columns are added as given.
    """

    def __init__(
        self,
        table: Table,
        keys: Sequence[str],
        update: Sequence[str] = (),
        *,
        set_: Callable[[Any], dict[str, Any]] | None = None,
        values: dict[str, Any] | None = None,
        returning: Sequence[Any] = (),
    ) -> None:
        if not update and set_ is None:
            raise ValueError("an upsert needs the columns to update, or set_")
        self.table = table
        self.keys = list(keys)
        self.update = tuple(update)
        self.set_ = set_
        self.values = values
        self.returning = tuple(returning)
        self._built: dict[str, Any] = {}

    def _build(self, dialect: str) -> Any:
        ins = dialect_insert(dialect)(self.table)
        if self.values is not None:
            ins = ins.values(**self.values)
        set_ = self.set_(ins) if self.set_ else {c: ins.excluded[c] for c in self.update}
        stmt = ins.on_conflict_do_update(index_elements=self.keys, set_=set_)
        return stmt.returning(*self.returning) if self.returning else stmt

    def statement(self, dialect: str) -> Any:
        """The statement for ``dialect`` (``"postgresql"`` or ``"sqlite"``)."""
        stmt = self._built.get(dialect)
        if stmt is None:
            stmt = self._built[dialect] = self._build(dialect)
        return stmt
