"""saml: per-SP RequestedAuthnContext handling, and the signing-key generation row

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 21:00:00

``saml_service_providers.requested_authn_context`` is ``strict`` (answer
``NoAuthnContext`` when the requested context cannot be satisfied) or
``lenient`` (assert the device-bound class anyway); existing SPs become strict.
``saml_key_generation`` holds one row whose ``generation`` goes up with every
change to the IdP's signing keys, so every process sees a change on its next
request.
"""

from alembic import op
import sqlalchemy as sa


revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saml_service_providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "requested_authn_context",
                sa.String(length=16),
                nullable=False,
                server_default="strict",
            )
        )
    key_generation = op.create_table(
        "saml_key_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(key_generation, [{"id": 1, "generation": 1}])


def downgrade() -> None:
    op.drop_table("saml_key_generation")
    with op.batch_alter_table("saml_service_providers", schema=None) as batch_op:
        batch_op.drop_column("requested_authn_context")
