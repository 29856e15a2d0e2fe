"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from idp_service import tables as all_models  # noqa: F401
from idp_service.platform.db import make_engine
from idp_service.platform.migrate import alembic_config, is_current, upgrade
from idp_service.platform.models import Base


def test_migrations_match_models_and_are_idempotent(empty_database_url):
    database_url = empty_database_url
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    assert is_current(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_0017_adds_the_job_leases_table_and_removes_it_on_downgrade(empty_database_url):
    url = empty_database_url
    cfg = alembic_config(url)
    command.upgrade(cfg, "0016")

    def tables() -> set[str]:
        engine = make_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    assert "job_leases" not in tables()
    command.upgrade(cfg, "0017")
    assert "job_leases" in tables()
    engine = make_engine(url)
    try:  # the primary key is the job's name: a second row for one job is refused
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO job_leases (name, next_run_at) VALUES ('x', :t)"),
                         {"t": "2026-01-01 00:00:00"})  # fmt: skip
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO job_leases (name, next_run_at) VALUES ('x', :t)"),
                         {"t": "2026-01-01 00:00:00"})  # fmt: skip
    finally:
        engine.dispose()
    command.downgrade(cfg, "0016")
    assert "job_leases" not in tables()
    command.upgrade(cfg, "heads")
    assert is_current(url)
