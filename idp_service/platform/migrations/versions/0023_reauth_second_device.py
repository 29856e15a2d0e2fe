"""re-verification: an upstream sign-in before a second device's trusted-device approval

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 04:20:00

Column ``second_device`` of ``reauth_policies`` (``idp_service/upstream/tables.py``).
"""

from alembic import op
import sqlalchemy as sa


revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reauth_policies") as batch:
        batch.add_column(
            sa.Column(
                "second_device", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("reauth_policies") as batch:
        batch.drop_column("second_device")
