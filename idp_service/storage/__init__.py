"""Persistence for the service: SQLAlchemy 2 models, engine set-up and Alembic migrations.

SQLite is the default (one file in the per-user data directory); PostgreSQL is
selected with ``DEVICETRUST_DATABASE_URL``. All state that must hold across
replicas (challenge consumption, device trust, user activity) lives here, never
in process memory.
"""
