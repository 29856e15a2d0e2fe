"""admin console: bootstrap tokens and the indexes of the console's pages

Revision ID: 0006_admin_console
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import idp_service.platform.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC = idp_service.platform.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_bootstrap_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("created_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_devices_last_seen_id", "devices", ["last_seen", "id"])
    op.create_index("ix_devices_state_last_seen_id", "devices", ["state", "last_seen", "id"])
    op.create_index("ix_devices_platform_last_seen_id", "devices", ["platform", "last_seen", "id"])
    op.create_index("ix_devices_hostname", "devices", ["hostname"])
    op.create_index("ix_check_results_status_check_id", "check_results", ["status", "check_id"])


def downgrade() -> None:
    op.drop_index("ix_check_results_status_check_id", table_name="check_results")
    op.drop_index("ix_devices_hostname", table_name="devices")
    op.drop_index("ix_devices_platform_last_seen_id", table_name="devices")
    op.drop_index("ix_devices_state_last_seen_id", table_name="devices")
    op.drop_index("ix_devices_last_seen_id", table_name="devices")
    op.drop_table("admin_bootstrap_tokens")
