"""saml issued responses: the Response a finished sign-in issued, to deliver it again

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:00:00

``saml_issued_responses`` keeps, per completed SAML login transaction, the
encoded Response that went to the SP, so a repeated ``/login/<id>/continue``
from the same browser delivers the same Response again (until ``valid_until``)
instead of an error page.
"""

from alembic import op
import sqlalchemy as sa
import idp_service.platform.models


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UTC = idp_service.platform.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "saml_issued_responses",
        sa.Column("txn_id", sa.String(length=64), nullable=False),
        sa.Column("saml_response", sa.Text(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.Column("issued_at", UTC, nullable=False),
        sa.Column("valid_until", UTC, nullable=False),
        sa.ForeignKeyConstraint(["txn_id"], ["login_transactions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("txn_id"),
    )
    op.create_index(
        "ix_saml_issued_responses_valid_until", "saml_issued_responses", ["valid_until"]
    )


def downgrade() -> None:
    op.drop_index("ix_saml_issued_responses_valid_until", table_name="saml_issued_responses")
    op.drop_table("saml_issued_responses")
