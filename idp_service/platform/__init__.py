"""What every feature stands on: configuration, the database, migrations, audit, keys.

Nothing here imports a feature package or the web framework. SQLite is the
default database (one file in the per-user data directory); PostgreSQL is
selected with ``DEVICETRUST_DATABASE_URL``. All state that must hold across
replicas (challenge consumption, device trust, user activity) lives in the
database, never in process memory.
"""
