"""name keys under one normalisation; server-side admin console sessions

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 22:20:00

``users.user_name_lower`` and ``groups.display_name_key`` are recomputed with
``idp_service.platform.identity.name_key`` (NFC, case folding, NFC), the normalisation
every look-up now uses. Rows that collide under it (``straße`` beside
``strasse``, an NFD ``Renée`` beside the NFC one, ``devicetrust-adminſ`` beside
``devicetrust-admins``) keep one owner of the key: a SCIM-managed row before
one that is not, then the oldest. Each other row keeps its name but gets the
key ``~collision~<id>``, which no look-up or admin-group check can match; a
colliding *user* is also deactivated, so its devices stop signing in until an
administrator sorts it out. ``admin_sessions`` holds console sessions.
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

import idp_service.platform.models

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UTC = idp_service.platform.models.UTCDateTime(timezone=True)


def _key(value: str) -> str:
    # A copy of idp_service.platform.identity.name_key as of this revision: a migration must not
    # change meaning when that module changes later.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).casefold())


def _rekey(table: str, name_col: str, key_col: str, managed_col: str | None) -> None:
    conn = op.get_bind()
    managed = f", {managed_col}" if managed_col else ", NULL"
    rows = [
        # (id, name, key, created_at, managed): JSON null (however the driver shows it)
        # counts as not managed.
        (*r[:4], r[4] not in (None, "null"))
        for r in conn.execute(
            sa.text(f"SELECT id, {name_col}, {key_col}, created_at{managed} FROM {table}")
        )
    ]
    by_key: dict[str, list] = {}
    for row in rows:
        if row[2].startswith("~"):  # tombstones (~deleted~<id>) keep their key
            continue
        by_key.setdefault(_key(row[1]), []).append(row)
    now = idp_service.platform.models.utcnow()
    changes: list[tuple[str, str, bool]] = []  # id, new key, deactivate
    for key, group in by_key.items():
        group.sort(key=lambda r: (not r[4], r[3], r[0]))
        owner, *others = group
        if owner[2] != key:
            changes.append((owner[0], key, False))
        for other in others:
            changes.append((other[0], f"~collision~{other[0]}", True))
    # Park every changing row on a unique temporary key first, so no UPDATE meets a key
    # another row still holds.
    for row_id, _, _ in changes:
        conn.execute(
            sa.text(f"UPDATE {table} SET {key_col} = :k WHERE id = :id"),
            {"k": f"~rekey~{row_id}", "id": row_id},
        )
    for row_id, key, collided in changes:
        conn.execute(
            sa.text(f"UPDATE {table} SET {key_col} = :k WHERE id = :id"),
            {"k": key, "id": row_id},
        )
        if collided and table == "users":
            conn.execute(
                sa.text(
                    "UPDATE users SET active = :f, deactivated_at = :now"
                    " WHERE id = :id AND active = :t"
                ),
                {"f": False, "t": True, "now": now, "id": row_id},
            )


def upgrade() -> None:
    _rekey("users", "user_name", "user_name_lower", "scim_resource")
    _rekey("groups", "display_name", "display_name_key", None)
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("user_name", sa.String(length=256), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("ended_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_sessions_user_id", "admin_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_admin_sessions_user_id", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    # The keys stay as they are: the old lower-case keys cannot be told apart from them.
