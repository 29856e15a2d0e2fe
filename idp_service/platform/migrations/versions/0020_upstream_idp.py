"""upstream OIDC IdP: authorization requests of the relying party

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-06 03:20:00

``upstream_logins`` holds one row per authorization request the service sends to
the organization's OpenID Connect IdP (``idp_service/upstream/``): the hash of its
``state``, its ``nonce`` and PKCE verifier, the login transaction it serves, and,
once the callback checked the ID token, the SCIM user it proved.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp_service.platform.models

revision = "0020"
down_revision = "0018"
branch_labels = None
depends_on = None

UTC = idp_service.platform.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upstream_logins",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("idp", sa.String(length=64), nullable=False),
        sa.Column("txn_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("subject", sa.String(length=256), nullable=True),
        sa.Column("verified_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("state_hash"),
    )
    op.create_index("ix_upstream_logins_txn_id", "upstream_logins", ["txn_id"])
    op.create_index("ix_upstream_logins_expires_at", "upstream_logins", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_upstream_logins_expires_at", table_name="upstream_logins")
    op.drop_index("ix_upstream_logins_txn_id", table_name="upstream_logins")
    op.drop_table("upstream_logins")
