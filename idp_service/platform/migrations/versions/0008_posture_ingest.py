"""posture ingest: content digests, volatile fields, input keys

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 04:40:00

``device_facts`` gains ``volatile`` (the per-report fields of reports that
repeat the stored document), ``digest`` (content digest of ``facts``),
``inputs`` (digest of every check's inputs at the last evaluation) and
``history_seq`` (the history ring's position, which now advances only when the
content changes); ``check_results`` gains ``inputs`` (the input key a result
was computed from). Existing rows get NULL digests, so each device is fully
evaluated at its next report.
"""

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_facts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("volatile", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("digest", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("inputs", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("history_seq", sa.Integer(), nullable=False, server_default="0")
        )
    # The ring continues where it was: until now it advanced with every report.
    op.execute("UPDATE device_facts SET history_seq = report_seq")
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inputs", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("check_results", schema=None) as batch_op:
        batch_op.drop_column("inputs")
    with op.batch_alter_table("device_facts", schema=None) as batch_op:
        batch_op.drop_column("history_seq")
        batch_op.drop_column("inputs")
        batch_op.drop_column("digest")
        batch_op.drop_column("volatile")
