"""admin API tokens; merges the SCIM, SAML and posture heads

Revision ID: 0005
Revises: 0002, 0003, 0004
"""

from alembic import op
import sqlalchemy as sa
import idp_service.platform.models


revision = '0005'
down_revision = ('0002', '0003', '0004')
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', idp_service.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', idp_service.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', idp_service.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('api_tokens')
