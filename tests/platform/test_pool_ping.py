"""Pooled PostgreSQL connections: pinged only after sitting idle, and replaced if dead."""

from __future__ import annotations

import psycopg
import pytest

from idp_service.platform import db as db_module
from idp_service.platform.db import Database
from idp_service.platform.driver import driver

pytestmark = pytest.mark.postgres


def _kill_backends(url: str) -> int:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    ) as admin:
        return admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid()",
            (u.database,),
        ).fetchone()[0]


def test_an_idle_dead_connection_is_replaced_before_use(postgres_url, monkeypatch):
    db = Database(postgres_url)
    try:
        with driver(db.engine) as (conn, _):
            first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert _kill_backends(postgres_url) >= 1
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)  # it has been idle "long enough"
        with driver(db.engine) as (conn, _):
            second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert second != first
        with db.session() as s:  # ORM sessions go through the same pool
            assert s.connection().exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        db.dispose()


def test_a_connection_returned_a_moment_ago_is_not_pinged(postgres_url):
    db = Database(postgres_url)
    try:
        pings = []
        real = db.engine.dialect.do_ping
        db.engine.dialect.do_ping = lambda conn: pings.append(1) or real(conn)
        for _ in range(5):
            with driver(db.engine) as (conn, _):
                conn.execute("SELECT 1")
        assert pings == []
    finally:
        db.dispose()
