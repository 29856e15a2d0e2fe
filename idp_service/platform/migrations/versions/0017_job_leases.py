"""job leases: each periodic job runs once across replicas

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 00:40:00

``job_leases`` holds one row per periodic job of the service (audit sealing and
checkpoints, the staleness sweep, the expiry clean-up). A process runs a job
only after taking its row with one conditional write
(``idp_service/platform/jobs.py``); it replaces the three hand-written
background threads, each of which ran in every process.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp_service.platform.models

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UTC = idp_service.platform.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("locked_until", UTC, nullable=True),
        sa.Column("next_run_at", UTC, nullable=False),
        sa.Column("last_started_at", UTC, nullable=True),
        sa.Column("last_finished_at", UTC, nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("job_leases")
