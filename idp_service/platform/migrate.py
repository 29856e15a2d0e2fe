"""Run Alembic migrations programmatically (used by ``devicetrust migrate`` and tests).

Surfaces add revisions with ``down_revision`` pointing at the revision they
build on; several heads may coexist, and ``upgrade`` applies them all.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

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


def is_current(url: str) -> bool:
    """True when the database is at every head (used by ``/readyz``)."""
    cfg = alembic_config(url)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return current == heads
