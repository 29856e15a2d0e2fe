"""audit chain: row MACs, chain position and hash, append-only triggers

The triggers refuse DELETE on
audit_events and any UPDATE except sealing (setting chain_seq/chain_hash on a
row that has none), so tampering needs the table owner to drop or disable them;
``devicetrust audit verify`` detects it even then.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CONTENT = ("id", "at", "action", "outcome", "code", "actor", "user_id", "device_id",
           "remote_addr", "details", "mac")  # fmt: skip

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    IF OLD.chain_seq IS NOT NULL
       OR (NEW.id, NEW.at, NEW.action, NEW.outcome, NEW.code, NEW.actor, NEW.user_id,
           NEW.device_id, NEW.remote_addr, NEW.details::text, NEW.mac)
          IS DISTINCT FROM
          (OLD.id, OLD.at, OLD.action, OLD.outcome, OLD.code, OLD.actor, OLD.user_id,
           OLD.device_id, OLD.remote_addr, OLD.details::text, OLD.mac)
    THEN
        RAISE EXCEPTION 'audit_events is append-only';
    END IF;
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("chain_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_audit_events_chain_seq", ["chain_seq"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
            "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
        )
    else:
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in CONTENT)
        op.execute(
            "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER audit_events_seal_only BEFORE UPDATE ON audit_events "
            f"WHEN OLD.chain_seq IS NOT NULL OR {changed} "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_events_seal_only")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_chain_seq")
        batch.drop_column("chain_hash")
        batch.drop_column("chain_seq")
        batch.drop_column("mac")
