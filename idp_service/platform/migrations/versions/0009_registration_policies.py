"""registration policies, trusted-device approval requests and their sealed notices

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 06:30:00

``registration_policies`` holds the run-time global registration policy and
per-SCIM-group policies; ``approval_requests`` one request per pending device
that a trusted device of the same user may approve with a code (only a keyed
hash of the code); ``approval_notices`` the code sealed to each trusted device.
"""

from alembic import op
import sqlalchemy as sa

from idp_service.platform.models import UTCDateTime


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_policies",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_index(
        "ix_registration_policies_group_id", "registration_policies", ["group_id"], unique=False
    )
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("code_seq", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("close_reason", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_approval_requests_user_id", "approval_requests", ["user_id"], unique=False
    )
    op.create_index(
        "ix_approval_requests_device_status",
        "approval_requests",
        ["device_id", "status"],
        unique=False,
    )
    op.create_table(
        "approval_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("code_mac", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_approval_notices_device_id", "approval_notices", ["device_id"], unique=False
    )
    op.create_index(
        "ix_approval_notices_request_id", "approval_notices", ["request_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("approval_notices")
    op.drop_table("approval_requests")
    op.drop_table("registration_policies")
