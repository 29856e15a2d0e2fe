"""upstream OIDC IdP: authorization requests of the relying party

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 03:20:00

``upstream_logins`` holds one row per authorization request the service sends to
the organization's OpenID Connect IdP (``idp_service/upstream/``): the hash of its
``state``, its ``nonce`` and PKCE verifier, the login transaction it serves, and,
once the callback checked the ID token, the SCIM user it proved.
``reauth_tokens`` holds the hashes of devices' re-authentication tokens and their
sealed grants; ``reauth_policies`` the re-verification windows (global, per group);
``reverify_marks`` an administrator's re-verify on a device.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp_service.platform.models

revision = "0020"
down_revision = "0019"
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
    op.create_table(
        "reauth_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("predecessor", sa.String(length=32), nullable=True),
        sa.Column("issued_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("issued_in", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.Column("used_in", sa.String(length=64), nullable=True),
        sa.Column("grace_used_at", UTC, nullable=True),
        sa.Column("revoked_at", UTC, nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    for column in ("family", "device_id", "user_id", "predecessor", "issued_in"):
        op.create_index(f"ix_reauth_tokens_{column}", "reauth_tokens", [column])
    op.create_table(
        "reauth_policies",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.Column("lifetime", sa.Integer(), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_table(
        "reverify_marks",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("requested_at", UTC, nullable=False),
        sa.Column("requested_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )


def downgrade() -> None:
    op.drop_table("reverify_marks")
    op.drop_table("reauth_policies")
    for column in ("family", "device_id", "user_id", "predecessor", "issued_in"):
        op.drop_index(f"ix_reauth_tokens_{column}", table_name="reauth_tokens")
    op.drop_table("reauth_tokens")
    op.drop_index("ix_upstream_logins_expires_at", table_name="upstream_logins")
    op.drop_index("ix_upstream_logins_txn_id", table_name="upstream_logins")
    op.drop_table("upstream_logins")
