"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from idp_service import tables as all_models  # noqa: F401
from idp_service.platform.db import make_engine
from idp_service.platform.migrate import is_current, upgrade
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
