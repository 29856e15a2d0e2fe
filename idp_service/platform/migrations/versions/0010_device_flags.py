"""device flags: clone, duplicate and staleness findings; agent instances

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-22 06:40:00

``device_flags`` holds what detection found (``idp_service/devices/detection.py``),
open until an administrator resolves it. ``devices`` gains the agent instance
ids that answered last, to notice two agents answering for one device. The new
device state ``suspended`` needs no schema change (``state`` is a string).
"""

from alembic import op
import sqlalchemy as sa


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_flags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=256), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device_flags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_flags_device_id"), ["device_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_device_flags_resolved_at"), ["resolved_at"], unique=False
        )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_instance", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("agent_instance_prev", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("agent_instance_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("agent_instance_at")
        batch_op.drop_column("agent_instance_prev")
        batch_op.drop_column("agent_instance")
    with op.batch_alter_table("device_flags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_flags_resolved_at"))
        batch_op.drop_index(batch_op.f("ix_device_flags_device_id"))
    op.drop_table("device_flags")
