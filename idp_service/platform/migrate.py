"""Run Alembic migrations programmatically (used by ``devicetrust migrate`` and tests).

Surfaces add revisions with ``down_revision`` pointing at the revision they
build on; several heads may coexist, and ``upgrade`` applies them all.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from idp_service.platform.db import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    command.upgrade(alembic_config(url), "heads")


@cache
def script_heads() -> frozenset[str]:
    """The heads of the migration scripts this process was built with (read once)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def is_current(url: str, engine: Engine | None = None) -> bool:
    """True when the database is at every head (used by ``/readyz``).

    ``engine``, when given, is the caller's pooled engine: a readiness probe every second
    must not open a new engine or re-read the scripts each time.
    """
    own = engine is None
    eng = make_engine(url) if engine is None else engine
    try:
        with eng.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        if own:
            eng.dispose()
    return current == script_heads()
