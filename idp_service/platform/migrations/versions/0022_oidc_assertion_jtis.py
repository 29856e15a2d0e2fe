"""the OpenID Connect provider: used private_key_jwt assertions (single use)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 04:10:00

Table ``oidc_assertion_jtis`` of ``idp_service/oidc/tables.py``.
"""

from alembic import op
import sqlalchemy as sa


revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_assertion_jtis",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_oidc_assertion_jtis_expires_at", "oidc_assertion_jtis", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_oidc_assertion_jtis_expires_at", table_name="oidc_assertion_jtis")
    op.drop_table("oidc_assertion_jtis")
