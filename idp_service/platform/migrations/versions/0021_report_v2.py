"""report ceremony v2: a per-device report counter, the held document digest, its confirmation

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 03:10:00

``devices.report_counter`` is the last counter a v2 report was accepted with
(each accepted report advances it with one conditional UPDATE);
``devices.report_digest`` the digest of the fact document the service holds for
the device (NULL: the next report must carry the whole document), and
``devices.facts_confirmed_at`` when a report last confirmed that document
(``idp_service/devices/report_v2.py``).
"""

from alembic import op
import sqlalchemy as sa

import idp_service.platform.models


revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("report_counter", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("report_digest", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column(
                "facts_confirmed_at",
                idp_service.platform.models.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("facts_confirmed_at")
        batch.drop_column("report_digest")
        batch.drop_column("report_counter")
