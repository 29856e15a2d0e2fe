"""Shared fixtures: a fresh database per test module on SQLite and on PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (trust auth); each use gets its
own database, made and dropped through pytest-postgresql's janitor.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST = os.environ.get("DEVICETRUST_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DEVICETRUST_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DEVICETRUST_TEST_PG_USER", "postgres")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests save screenshots and logs for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    from pytest_postgresql.janitor import DatabaseJanitor

    name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(user=PG_USER, host=PG_HOST, port=PG_PORT, dbname=name)
    janitor.init()
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        janitor.drop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'devicetrust.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """``database_url`` migrated to the newest schema."""
    from idp_service.storage.migrate import upgrade

    upgrade(database_url)
    return database_url


@pytest.fixture
def service_ctx(migrated_url: str, tmp_path: Path):
    """An in-process service context (settings, database, keys) on a migrated database."""
    from idp_service.app import create_app
    from idp_service.config import Settings

    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": migrated_url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            # Property tests send hundreds of requests from one address; the limits
            # themselves are tested in tests/test_ratelimit.py.
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
        }
    )
    app = create_app(settings)
    yield app
    app.extensions["devicetrust"].db.dispose()
