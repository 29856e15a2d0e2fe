"""signed agent self-update: the trusted update key and published manifests

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 00:10:00

``update_keys`` holds the update public key the service checks manifests
against; ``update_manifests`` every published signed manifest by serial
(``idp_service/updates/store.py``).
"""

from alembic import op
import sqlalchemy as sa


revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "update_keys",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_table(
        "update_manifests",
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )


def downgrade() -> None:
    op.drop_table("update_manifests")
    op.drop_table("update_keys")
