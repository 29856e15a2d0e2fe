"""the OpenID Connect provider: clients, signing keys, codes, access tokens

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 03:10:00

Tables of ``idp_service/oidc/tables.py``.
"""

from alembic import op
import sqlalchemy as sa


revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oidc_clients",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("redirect_uris", sa.JSON(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.JSON(), nullable=False),
        sa.Column("token_auth_method", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("acr", sa.String(length=128), nullable=False),
        sa.Column("id_token_minutes", sa.Integer(), nullable=False),
        sa.Column("eam_tenant_id", sa.String(length=64), nullable=True),
        sa.Column("eam_issuer", sa.String(length=512), nullable=True),
        sa.Column("eam_jwks_url", sa.String(length=1024), nullable=True),
        sa.Column("eam_hint_max_age", sa.Integer(), nullable=False),
        sa.Column("eam_user_match", sa.String(length=32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "oidc_signing_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active_slot", sa.String(length=8), nullable=True),
        sa.Column("next_slot", sa.String(length=8), nullable=True),
        sa.Column("private_key_pem", sa.LargeBinary(), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("activated_at", TS, nullable=True),
        sa.Column("retired_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_slot"),
        sa.UniqueConstraint("next_slot"),
    )
    op.create_table(
        "oidc_key_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO oidc_key_generation (id, generation) VALUES (1, 0)")
    op.create_table(
        "oidc_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("txn_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2048), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("scope", sa.String(length=1024), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("code_hash"),
    )
    op.create_index("ix_oidc_codes_txn_id", "oidc_codes", ["txn_id"])
    op.create_index("ix_oidc_codes_expires_at", "oidc_codes", ["expires_at"])
    op.create_table(
        "oidc_access_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_oidc_access_tokens_code_hash", "oidc_access_tokens", ["code_hash"])
    op.create_index("ix_oidc_access_tokens_user_id", "oidc_access_tokens", ["user_id"])
    op.create_index("ix_oidc_access_tokens_expires_at", "oidc_access_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oidc_access_tokens")
    op.drop_table("oidc_codes")
    op.drop_table("oidc_key_generation")
    op.drop_table("oidc_signing_keys")
    op.drop_table("oidc_clients")
