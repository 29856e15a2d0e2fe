"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (trust auth). Migrating a new
database costs about a second, so each test session (each xdist worker) migrates
one template per backend and every test gets a copy of it: ``CREATE DATABASE …
TEMPLATE`` on PostgreSQL, a file copy on SQLite. Tests of the migrations
themselves take ``empty_database_url``.

Hypothesis runs under the ``ci`` profile when ``CI`` is set (derandomised, so a
CI run is repeatable) and under ``dev`` otherwise. Mutation runs (tests/mutation/run.py)
set ``HYPOTHESIS_PROFILE=mutation``: at most MUTATION_MAX_EXAMPLES examples per property,
including those whose ``@settings`` ask for more, and no example database, so that each
mutant costs seconds and its verdict does not depend on the mutants tested before it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

PG_HOST = os.environ.get("DEVICETRUST_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DEVICETRUST_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DEVICETRUST_TEST_PG_USER", "postgres")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
MUTATION_MAX_EXAMPLES = 25
settings.register_profile(
    "mutation",
    max_examples=MUTATION_MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "dev"
)
settings.load_profile(HYPOTHESIS_PROFILE)


def cap_examples(items: list[pytest.Item], limit: int) -> int:
    """Lower every collected Hypothesis test's ``max_examples`` to at most ``limit``.

    A test's own ``@settings(max_examples=...)`` outranks the profile, so the mutation
    profile alone would not shorten the property tests that ask for 300 examples. The
    given-wrapper reads its settings when it is called, from the attribute set here.
    Returns how many tests were lowered.
    """
    lowered = 0
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        if not getattr(test, "is_hypothesis_test", False):
            continue
        own = test._hypothesis_internal_use_settings
        if own.max_examples > limit or own.database is not None:
            test._hypothesis_internal_use_settings = settings(
                own, max_examples=min(own.max_examples, limit), database=None
            )
            lowered += 1
    return lowered


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of a module that uses tests/procs.py's process helpers as ``e2e``,
    so that ``-m "not e2e"`` selects the in-process suite without a list to keep up."""
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        uses_procs = any(
            getattr(value, "__module__", None) == "tests.procs" for value in vars(module).values()
        )
        if uses_procs:
            item.add_marker(pytest.mark.e2e)
    if HYPOTHESIS_PROFILE == "mutation":
        cap_examples(items, MUTATION_MAX_EXAMPLES)


# In CI every test must run: a skip there would hide a missing install step, or a
# security test that quietly stopped testing. The only skips allowed are these, each
# with the reason it is right to skip.
ALLOWED_CI_SKIPS = {
    # scim2-server's storage contract cases for cursor pagination, which we don't offer.
    "The service does not support cursor pagination": "feature not offered",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under ``CI``, turn a skip whose reason is not in ALLOWED_CI_SKIPS into a failure."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    if any(allowed in reason for allowed in ALLOWED_CI_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI, where every test must run: {reason}\n"
        "Install what it needs in packaging/system-deps.sh, or add its reason to "
        "ALLOWED_CI_SKIPS in tests/conftest.py with why skipping is right."
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests save screenshots and logs for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _pg_admin():
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def _pg_url(name: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def _pg_drop(name: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated to the newest schema, copied by each test."""
    from idp_service.platform.migrate import upgrade

    name = f"devicetrust_tmpl_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(_pg_url(name))
        yield name
    finally:
        _pg_drop(name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to the newest schema, copied by each test."""
    import sqlite3

    from idp_service.platform.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # fold any WAL into the file before copying it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no schema), dropped afterwards."""
    name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        _pg_drop(name)


@pytest.fixture
def postgres_url(_pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the newest schema, dropped afterwards."""
    name = f"devicetrust_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template}" STRATEGY FILE_COPY')
    try:
        yield _pg_url(name)
    finally:
        _pg_drop(name)


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file with no schema."""
    return f"sqlite:///{tmp_path / 'devicetrust.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh SQLite database file at the newest schema."""
    path = tmp_path / "devicetrust.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``database_url`` without a schema: for tests of the migrations themselves."""
    if request.param == "sqlite":
        return request.getfixturevalue("empty_sqlite_url")
    return request.getfixturevalue("empty_postgres_url")


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """``database_url`` migrated to the newest schema."""
    from idp_service.platform.migrate import upgrade

    upgrade(database_url)
    return database_url


def _service_app(url: str, tmp_path: Path, **env: str):
    from idp_service.app import create_app
    from idp_service.platform.config import Settings

    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            # Property tests send hundreds of requests from one address; the limits
            # themselves are tested in tests/platform/test_ratelimit.py.
            "DEVICETRUST_RATELIMIT_ENABLED": "false",
            **env,
        }
    )
    return create_app(settings)


@pytest.fixture
def service_ctx(migrated_url: str, tmp_path: Path):
    """An in-process service context (settings, database, keys) on a migrated database."""
    app = _service_app(migrated_url, tmp_path)
    yield app
    app.extensions["devicetrust"].db.dispose()


@pytest.fixture
def postgres_service_ctx(postgres_url: str, tmp_path: Path):
    """``service_ctx`` on PostgreSQL only: for a unit test of what only PostgreSQL shows
    (row locks, the order of rows without ORDER BY). Mark the test ``postgres``."""
    app = _service_app(postgres_url, tmp_path)
    yield app
    app.extensions["devicetrust"].db.dispose()


@pytest.fixture
def sqlite_service_ctx(sqlite_url: str, tmp_path: Path):
    """``service_ctx`` on SQLite only: for the unit files that mutation runs select, where
    each test's database should cost a file copy (the same code paths run on PostgreSQL
    in the suites that take ``service_ctx``)."""
    app = _service_app(sqlite_url, tmp_path)
    yield app
    app.extensions["devicetrust"].db.dispose()
